"""NVT molecular dynamics (Langevin) with a Facet model in ASE.

    python examples/ase_md.py --model model.hlo
    python examples/ase_md.py --model model.hlo --structure POSCAR --temperature 600 --steps 5000

Writes <out>.traj (trajectory), <out>.log (ASE MD log) and <out>.png
(temperature and energies against time).  Without --structure, the first
element of the model is built as a bulk crystal (ase.build.bulk) and repeated.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Tiny 3x3 linear algebra in ASE gains nothing from BLAS threads, and on a busy
# machine they can stall every call: leave the cores to the model.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def default_crystal(elements):
    """A bulk crystal of the first model element that ASE knows one for."""
    from ase.build import bulk

    for symbol in elements:
        for cubic in (True, False):
            try:
                return bulk(symbol, cubic=cubic)
            except (ValueError, KeyError, RuntimeError):
                continue
    raise SystemExit(f"no default crystal for elements {list(elements)}: pass --structure FILE")


def add_model_and_structure_args(p, repeat=(2, 2, 2)):
    """The options every example shares: the model (file or checkpoint) and the structure."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model file written by `python -m facet.export`")
    src.add_argument("--checkpoint", help="training checkpoint (runs the model in process)")
    p.add_argument("--structure", help="initial structure (any file ASE reads)")
    p.add_argument("--repeat", type=int, nargs=3, default=list(repeat), metavar=("NX", "NY", "NZ"))


def calculator_of(args):
    from facet.calculator import FacetCalculator

    return FacetCalculator(args.model) if args.model else FacetCalculator.from_checkpoint(args.checkpoint)


def build_structure(args, elements):
    from ase.io import read

    atoms = read(args.structure) if args.structure else default_crystal(elements)
    return atoms * tuple(args.repeat)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_structure_args(p)
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--interval", type=int, default=10, help="write every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="md", help="output prefix")
    args = p.parse_args(argv)

    from ase import units
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta


    t0 = time.perf_counter()
    calc = calculator_of(args)
    atoms = build_structure(args, calc.elements)
    atoms.calc = calc
    print(f"model: {calc.runner!r}")
    print(f"system: {atoms.get_chemical_formula()}, {len(atoms)} atoms, pbc={atoms.pbc.tolist()}")

    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, args.timestep * units.fs, temperature_K=args.temperature,
                   friction=args.friction / units.fs, fixcm=False, rng=rng,
                   logfile=f"{args.out}.log", loginterval=args.interval)
    traj = Trajectory(f"{args.out}.traj", "w", atoms)
    dyn.attach(traj.write, interval=args.interval)
    series = {"t": [], "T": [], "epot": [], "etot": []}

    def record():
        n = len(atoms)
        series["t"].append(dyn.get_time() / (1000 * units.fs))
        series["T"].append(atoms.get_temperature())
        series["epot"].append(atoms.get_potential_energy() / n)
        series["etot"].append(atoms.get_total_energy() / n)

    dyn.attach(record, interval=args.interval)
    atoms.get_potential_energy()  # compile before timing
    runner = calc.runner
    t_ready, compile0 = time.perf_counter(), runner.compile_seconds
    dyn.run(args.steps)
    t_end = time.perf_counter()
    traj.close()

    compile_run = runner.compile_seconds - compile0  # new buckets met during the run
    per_step = (t_end - t_ready - compile_run) / max(args.steps, 1)
    ns_per_day = args.timestep * 1e-6 / per_step * 86400
    print(f"start-up (load + first compile): {t_ready - t0:.1f} s")
    print(f"{args.steps} steps in {t_end - t_ready:.1f} s ({compile_run:.1f} s of it compiling): "
          f"{per_step * 1e3:.1f} ms/step, {ns_per_day:.3f} ns/day")
    print(f"compilations: {runner.num_compilations} (shapes {runner.shapes_seen}), {runner.compile_seconds:.1f} s")
    print(f"final temperature {atoms.get_temperature():.0f} K; wrote {args.out}.traj, {args.out}.log", end="")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(" (matplotlib missing: no plot)")
        return 0
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(6, 5))
    ax1.plot(series["t"], series["T"])
    ax1.axhline(args.temperature, color="k", lw=0.8, ls="--")
    ax1.set_ylabel("temperature (K)")
    ax2.plot(series["t"], series["epot"], label="potential")
    ax2.plot(series["t"], series["etot"], label="total")
    ax2.set_ylabel("energy (eV/atom)")
    ax2.set_xlabel("time (ps)")
    ax2.legend()
    fig.suptitle(f"Langevin NVT, {atoms.get_chemical_formula()}, {args.temperature:g} K")
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    print(f", {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
