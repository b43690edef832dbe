"""Relax the positions and the cell of a rattled, strained crystal with a Facet model.

    python examples/relax.py --model model.hlo
    python examples/relax.py --model model.hlo --structure POSCAR --optimizer BFGS --fmax 0.005

Uses ASE's FrechetCellFilter (positions and cell together) with FIRE or BFGS
and prints energy, forces, stress, volume and cell before and after.
Without --structure, the first model element with a known crystal
(ase.build.bulk) is built.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Tiny 3x3 linear algebra in the cell filter gains nothing from BLAS threads,
# and on a busy machine they can stall every step: leave the cores to the model.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from ase_md import add_model_and_structure_args, build_structure, calculator_of  # noqa: E402  (this folder is on sys.path when run as a script)


def describe(label, atoms):
    from ase import units
    from ase.filters import FrechetCellFilter

    n = len(atoms)
    e = atoms.get_potential_energy()
    f = np.linalg.norm(atoms.get_forces(), axis=1).max()
    s = atoms.get_stress() / units.GPa
    fmax_filter = np.linalg.norm(FrechetCellFilter(atoms).get_forces(), axis=1).max()
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    print(f"{label}:")
    print(f"  energy        {e:.6f} eV ({e / n:.6f} eV/atom)")
    print(f"  max |force|   {f:.4f} eV/A (cell filter: {fmax_filter:.4f})")
    print(f"  stress (GPa)  {' '.join(f'{x:8.3f}' for x in s)}  (xx yy zz yz xz xy)")
    print(f"  volume        {atoms.get_volume() / n:.4f} A^3/atom")
    print(f"  cell          a={a:.4f} b={b:.4f} c={c:.4f} A, "
          f"alpha={alpha:.2f} beta={beta:.2f} gamma={gamma:.2f} deg")
    return e


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_structure_args(p, repeat=(1, 1, 1))
    p.add_argument("--rattle", type=float, default=0.05, help="position noise (A)")
    p.add_argument("--strain", type=float, default=0.02, help="random cell strain amplitude")
    p.add_argument("--optimizer", choices=("FIRE", "BFGS"), default="FIRE")
    p.add_argument("--fmax", type=float, default=0.01, help="convergence, eV/A (cell filter forces)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="relaxed.extxyz")
    args = p.parse_args(argv)

    from ase.filters import FrechetCellFilter
    from ase.io import write
    from ase.optimize import BFGS, FIRE

    calc = calculator_of(args)
    atoms = build_structure(args, calc.elements)
    rng = np.random.default_rng(args.seed)
    atoms.rattle(args.rattle, rng=rng)
    strain = np.eye(3) + args.strain * rng.uniform(-1, 1, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
    atoms.calc = calc
    print(f"model: {calc.runner!r}")
    print(f"system: {atoms.get_chemical_formula()}, {len(atoms)} atoms")

    e0 = describe("before", atoms)
    optimizer = {"FIRE": FIRE, "BFGS": BFGS}[args.optimizer]
    opt = optimizer(FrechetCellFilter(atoms), logfile="-")
    t = time.perf_counter()
    converged = opt.run(fmax=args.fmax, steps=args.steps)
    t = time.perf_counter() - t
    e1 = describe("after", atoms)
    print(f"{args.optimizer}: {'converged' if converged else 'NOT converged'} in {opt.nsteps} steps, {t:.1f} s; "
          f"energy change {e1 - e0:+.6f} eV; compilations {calc.runner.num_compilations}")
    write(args.output, atoms)
    print(f"wrote {args.output}")
    return 0 if converged else 1


if __name__ == "__main__":
    sys.exit(main())
