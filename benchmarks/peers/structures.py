"""Deterministic benchmark structures, built with ASE (no downloads).

    python benchmarks/peers/structures.py [--out benchmarks/out/peers/structures]

Writes extxyz files (each frame carries ``name`` and ``group`` in its info) and
``listing.json``:

* ``si_64.extxyz``, ``si_512.extxyz``, ``si_4096.extxyz``: diamond Si supercells
  (a = 5.431 A, conventional 8-atom cell repeated 2, 4, 8 times), rattled 0.02 A;
* ``si_scaling.extxyz``: the same for 64, 216, 512, 1000, 1728, 4096, 8000 atoms;
* ``multi.extxyz``: multi-element crystals every universal peer knows:
  alpha-quartz SiO2 2x2x2 (72 atoms, also runs with a Si/O Facet model) and cubic
  perovskite SrTiO3 3x3x3 (135 atoms), rattled 0.02 A;
* ``relax.extxyz``: relaxation set (Si diamond, NaCl rocksalt, SrTiO3 perovskite,
  bcc Fe, fcc Cu, wurtzite GaN, alpha-quartz SiO2), each as its conventional cell
  and as a 2x2x2 supercell, rattled 0.05 A.

Every rattle uses its own fixed seed, so the files are identical on every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "out" / "peers" / "structures"

SI_A = 5.431
SI_SIZES = {64: 2, 216: 3, 512: 4, 1000: 5, 1728: 6, 4096: 8, 8000: 10}


def _rattled(atoms, stdev: float, seed: int, name: str, group: str):
    atoms = atoms.copy()
    atoms.rattle(stdev=stdev, seed=seed)
    atoms.wrap()
    atoms.info = {"name": name, "group": group, "rattle_A": stdev, "seed": seed}
    return atoms


def si_diamond(n_atoms: int, stdev: float = 0.02, seed: int | None = None):
    """Diamond Si supercell of n_atoms (one of 64, 216, 512, 1000, 1728, 4096, 8000)."""
    from ase.build import bulk

    k = SI_SIZES[n_atoms]
    cell = bulk("Si", "diamond", a=SI_A, cubic=True) * (k, k, k)
    return _rattled(cell, stdev, n_atoms if seed is None else seed, f"Si_diamond_{n_atoms}", "si")


def quartz():
    """Alpha-quartz SiO2 (P3_121, 9 atoms; a = 4.916 A, c = 5.405 A; Si-O 1.61 A)."""
    from ase.spacegroup import crystal

    return crystal(["Si", "O"], basis=[(0.4697, 0.0, 1.0 / 3.0), (0.4135, 0.2669, 0.7857)], spacegroup=152,
                   cellpar=[4.916, 4.916, 5.405, 90, 90, 120])


def unit_cells():
    """Conventional cells of the relaxation set, by name (reasonable experimental lattice constants)."""
    from ase.build import bulk

    return {
        "Si_diamond": bulk("Si", "diamond", a=5.431, cubic=True),        # 8 atoms
        "NaCl_rocksalt": bulk("NaCl", "rocksalt", a=5.640, cubic=True),  # 8
        "SrTiO3_perovskite": perovskite(),                               # 5
        "Fe_bcc": bulk("Fe", "bcc", a=2.866, cubic=True),                # 2
        "Cu_fcc": bulk("Cu", "fcc", a=3.615, cubic=True),                # 4
        "GaN_wurtzite": bulk("GaN", "wurtzite", a=3.189, c=5.185),       # 4
        "SiO2_quartz": quartz(),                                          # 9
    }


def perovskite(a: float = 3.905):
    """Cubic SrTiO3 (Pm-3m, 5 atoms)."""
    from ase import Atoms

    return Atoms("SrTiO3", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
                 cell=[a, a, a], pbc=True)


def multi_element():
    return [
        _rattled(quartz() * (2, 2, 2), 0.02, 72, "SiO2_quartz_72", "multi"),
        _rattled(perovskite() * (3, 3, 3), 0.02, 135, "SrTiO3_perovskite_135", "multi"),
    ]


def relax_set(stdev: float = 0.05):
    out = []
    for i, (name, cell) in enumerate(unit_cells().items()):
        out.append(_rattled(cell, stdev, 1000 + 2 * i, f"{name}_{len(cell)}", "relax"))
        sup = cell * (2, 2, 2)
        out.append(_rattled(sup, stdev, 1001 + 2 * i, f"{name}_{len(sup)}", "relax"))
    return out


def all_sets():
    """{file stem: list of Atoms}."""
    scaling = [si_diamond(n) for n in SI_SIZES]
    by_n = {len(a): a for a in scaling}
    return {
        "si_64": [by_n[64]],
        "si_512": [by_n[512]],
        "si_4096": [by_n[4096]],
        "si_scaling": scaling,
        "multi": multi_element(),
        "relax": relax_set(),
    }


def write_structures(out_dir=DEFAULT_OUT) -> Path:
    """Write every set as ``<stem>.extxyz`` plus ``listing.json``; returns the listing path."""
    from ase.io import write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    listing = {}
    for stem, frames in all_sets().items():
        path = out / f"{stem}.extxyz"
        write(path, frames, format="extxyz")
        listing[stem] = {
            "file": path.name,
            "structures": [
                {"name": a.info["name"], "formula": a.get_chemical_formula(), "n_atoms": len(a),
                 "elements": sorted(set(a.get_chemical_symbols())), "rattle_A": a.info["rattle_A"],
                 "seed": a.info["seed"], "volume_A3": round(float(a.get_volume()), 3)}
                for a in frames
            ],
        }
    path = out / "listing.json"
    path.write_text(json.dumps(listing, indent=1) + "\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    args = ap.parse_args()
    path = write_structures(args.out)
    listing = json.loads(path.read_text())
    for entry in listing.values():
        names = ", ".join(f"{s['name']}" for s in entry["structures"])
        print(f"{entry['file']:18s} {names}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
