"""Run one Facet model file in LAMMPS and in ASE on the same structure and
print how well they agree, then run a short LAMMPS NVE MD.

    python examples/lammps/compare_with_ase.py --model model.hlo [--structure FILE] [--md-steps 100]

Without --structure, the first structure of the bundled SiO2 data is used,
repeated 2x2x2 (for a float64 model the two should agree to ~1e-10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def setup(lmp, atoms, model: str, elements: list[str]):
    from ase.io import write

    types = sorted(set(atoms.get_chemical_symbols()), key=elements.index)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "structure.data"
        write(data, atoms, format="lammps-data", specorder=types, masses=True, atom_style="atomic")
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            boundary p p p
            atom_modify map yes
            read_data {data}
        """)
    lmp.commands_string(f"""
        pair_style facet {model}
        pair_coeff * * {' '.join(types)}
        neighbor 1.0 bin
        compute peratom all pe/atom
        thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
        thermo_modify format float %.12g
    """)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--structure", help="any file ase.io.read understands (periodic)")
    p.add_argument("--md-steps", type=int, default=100)
    args = p.parse_args()

    from ase import units
    from ase.io import read

    from facet import FacetCalculator
    from facet.data import default_dataset_path

    atoms = read(args.structure) if args.structure else read(default_dataset_path(), index=0) * (2, 2, 2)
    atoms.calc = None
    calc = FacetCalculator(args.model)
    elements = list(calc.runner.elements)
    ase_atoms = atoms.copy()
    ase_atoms.calc = calc
    e_ase = ase_atoms.get_potential_energy()
    f_ase = ase_atoms.get_forces()
    s_ase = ase_atoms.get_stress(voigt=False)
    ea_ase = ase_atoms.get_potential_energies()

    from facet._lammps import new_lammps

    lmp = new_lammps()
    setup(lmp, atoms, args.model, elements)
    lmp.command("run 0")
    e_lmp = lmp.get_thermo("pe")
    nlocal = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
    order = np.argsort(ids)
    f_lmp = np.array(lmp.numpy.extract_atom("f")[:nlocal])[order]
    ea_lmp = np.array(lmp.numpy.extract_compute("peratom", 1, 1)[:nlocal])[order]
    # LAMMPS pressure (bar) -> ASE stress (eV/Å^3, opposite sign).
    p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")}
    s_lmp = -units.bar * np.array([[p["pxx"], p["pxy"], p["pxz"]],
                                   [p["pxy"], p["pyy"], p["pyz"]],
                                   [p["pxz"], p["pyz"], p["pzz"]]])
    # ASE and LAMMPS may rotate a triclinic cell differently: compare invariants then.
    rotated = not np.allclose(atoms.cell.array, np.triu(atoms.cell.array.T).T)
    print(f"structure: {atoms.get_chemical_formula()} ({len(atoms)} atoms), model {args.model} ({calc.runner.dtype})")
    print(f"energy      ASE {e_ase:.10f} eV   LAMMPS {e_lmp:.10f} eV   |diff| {abs(e_ase - e_lmp):.2e} eV")
    print(f"per-atom energies  max |diff| {np.abs(ea_ase - ea_lmp).max():.2e} eV")
    if rotated:
        fa, fl = np.linalg.norm(f_ase, axis=1), np.linalg.norm(f_lmp, axis=1)
        print(f"|forces|    max |diff| {np.abs(fa - fl).max():.2e} eV/Å (cell rotated by LAMMPS: compared as norms)")
        print(f"pressure    max |diff| {abs(np.trace(s_ase) - np.trace(s_lmp)) / 3:.2e} eV/Å^3")
    else:
        print(f"forces      max |diff| {np.abs(f_ase - f_lmp).max():.2e} eV/Å   (max |F| {np.abs(f_ase).max():.2f})")
        print(f"stress      max |diff| {np.abs(s_ase - s_lmp).max():.2e} eV/Å^3")

    if args.md_steps > 0:
        lmp.commands_string(f"""
            velocity all create 600 42 mom yes rot yes
            timestep 0.0005
            fix nve all nve
            thermo {max(args.md_steps // 5, 1)}
            run 0
        """)
        e0 = lmp.get_thermo("etotal")
        lmp.command(f"run {args.md_steps}")
        e1 = lmp.get_thermo("etotal")
        print(f"LAMMPS NVE {args.md_steps} steps of 0.5 fs: total energy {e0:.6f} -> {e1:.6f} eV "
              f"(change {abs(e1 - e0) / len(atoms) * 1000:.3f} meV/atom), "
              f"final temperature {lmp.get_thermo('temp'):.0f} K")
    lmp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
