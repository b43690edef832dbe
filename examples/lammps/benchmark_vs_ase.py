"""Time one MD step of a Facet model in LAMMPS (pair style `facet`) against
one energy + forces + stress evaluation through the ASE calculator, on the
same model file and structure, in the same process.

    python benchmark_vs_ase.py [MODEL] [--element Si] [--lattice diamond] [--a 5.43]
                                  [--reps 4] [--steps 50] [--repeat 3]

Both paths call the same facet.runtime.ModelRunner code (shape buckets are
warmed up first), so the difference is the cost of building the graph and
assembling forces: ASE's neighbour list in Python vs. LAMMPS's neighbour list
mapped onto the graph in C++.  The two paths are timed alternately and the
best repeat of each is reported; "model" is the time inside
ModelRunner.__call__, "rest" everything else.  On a busy machine, pin the
process to one core and give XLA one thread for stable numbers:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 0 python benchmark_vs_ase.py model.hlo
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "export" / "facet-tiny-sio2.hlo"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=str(SHIPPED_MODEL),
                   help="model file (default: export/facet-tiny-sio2.hlo of the repository)")
    p.add_argument("--element", default="Si")
    p.add_argument("--lattice", default="diamond")
    p.add_argument("--a", type=float, default=5.43)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="timing repeats; the best is reported")
    args = p.parse_args(argv)

    import numpy as np
    from ase.build import bulk

    from facet._lammps import new_lammps
    from facet.calculator import FacetCalculator

    atoms = bulk(args.element, args.lattice, a=args.a, cubic=True).repeat(args.reps)
    atoms.rattle(0.05, seed=1)
    n = len(atoms)

    # --- ASE ----------------------------------------------------------------
    calc = FacetCalculator(args.model)
    atoms.calc = calc
    rng = np.random.default_rng(0)

    def ase_block():
        for _ in range(args.steps):
            atoms.positions += rng.normal(scale=1e-4, size=atoms.positions.shape)
            atoms.get_forces()
            atoms.get_stress()

    # --- LAMMPS -------------------------------------------------------------
    lmp = new_lammps()
    lmp.commands_string(
        f"""
        units metal
        atom_style atomic
        lattice {args.lattice} {args.a}
        region box block 0 {args.reps} 0 {args.reps} 0 {args.reps}
        create_box 1 box
        create_atoms 1 box
        mass 1 28.0
        displace_atoms all random 0.05 0.05 0.05 1 units box
        pair_style facet {args.model}
        pair_coeff * * {args.element}
        neighbor 1.0 bin
        velocity all create 300 1 loop geom
        fix 1 all nve
        timestep 0.0005
        thermo_style custom step pe press
        thermo 1
        """
    )

    def lammps_block():
        lmp.command(f"run {args.steps} pre no post no")

    # time spent inside the model (same ModelRunner code on both paths)
    from facet.runtime import ModelRunner

    model_time = [0.0]
    original_call = ModelRunner.__call__

    def timed_call(self, *a):
        t0 = time.perf_counter()
        try:
            return original_call(self, *a)
        finally:
            model_time[0] += time.perf_counter() - t0

    ModelRunner.__call__ = timed_call

    # warm up (compile the shape buckets), then alternate the two paths
    ase_block()
    lmp.command("run 5")
    lammps_block()
    results = {"ase": [], "lammps": []}
    for _ in range(args.repeat):
        for name, block in (("ase", ase_block), ("lammps", lammps_block)):
            model_time[0] = 0.0
            t0 = time.perf_counter()
            block()
            total = (time.perf_counter() - t0) / args.steps
            results[name].append((total, model_time[0] / args.steps))
    lmp.close()
    ModelRunner.__call__ = original_call

    def best(name):
        total, model = min(results[name])
        return total, model

    ase_t, ase_m = best("ase")
    lmp_t, lmp_m = best("lammps")
    print(f"{n} atoms, model {os.path.basename(args.model)} ({calc.runner.dtype}), "
          f"cutoff {calc.runner.cutoff:.3g} A, {calc.last_num_edges} edges")
    print(f"ASE calculator (energy+forces+stress): {1e3 * ase_t:8.2f} ms/call "
          f"(model {1e3 * ase_m:.2f}, rest {1e3 * (ase_t - ase_m):.2f})")
    print(f"LAMMPS pair facet (MD step, virial every step): {1e3 * lmp_t:8.2f} ms/step "
          f"(model {1e3 * lmp_m:.2f}, rest {1e3 * (lmp_t - lmp_m):.2f})")
    print(f"LAMMPS / ASE: {lmp_t / ase_t:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
