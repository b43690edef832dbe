"""PJRT CPU plugins side by side: the same model file executed by each plugin through
facet._pjrt, and by jax (facet.runtime.ModelRunner), on rattled Si diamond.

    pip download --no-deps lammps-jax-pjrt-cpu -d wheels && unzip wheels/*.whl -d wheels
    python benchmarks/pjrt_plugins.py --plugin lammps-jax=wheels/lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so
        [--model export/facet-small-si.hlo] [--sizes 64,512] [--blocks 7]

The default plugin (xla-cpu-pjrt, the one facet installs) is always timed. Median
milliseconds per call over alternating blocks; absolute times drift on a shared machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "export" / "facet-small-si.hlo"))
    p.add_argument("--plugin", action="append", default=[], metavar="NAME=PATH", help="another plugin library")
    p.add_argument("--sizes", default="64,512")
    p.add_argument("--blocks", type=int, default=7)
    args = p.parse_args(argv)
    from ase.build import bulk

    from facet import _pjrt
    from facet.graph import neighbour_list
    from facet.runtime import ModelRunner

    plugins = {"xla-cpu-pjrt": "", **dict(spec.split("=", 1) for spec in args.plugin)}
    runner = ModelRunner(args.model)
    for size in [int(x) for x in args.sizes.split(",")]:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True) * max(1, round((size / 8) ** (1 / 3)))
        atoms.rattle(0.03, seed=0)
        models = {name: _pjrt.Model(args.model, plugin=path) for name, path in plugins.items()}
        pos, cell = atoms.positions, atoms.cell.array
        s, r, shifts = neighbour_list(pos, cell, atoms.pbc, runner.cutoff)
        graph = (pos[s] - pos[r] + shifts @ cell, s.astype(np.int32), r.astype(np.int32),
                 np.zeros(len(atoms), np.int32), np.ones(len(atoms)))
        calls = {name: (lambda m=m: m(*graph)) for name, m in models.items()}
        calls["jax"] = lambda: runner(*graph)
        for call in calls.values():  # compile and warm up
            call()
            call()
        times = {name: [] for name in calls}
        n = max(1, 1000 // len(atoms))
        for block in range(args.blocks):
            for name in (list(calls) if block % 2 == 0 else list(calls)[::-1]):
                t0 = time.perf_counter()
                for _ in range(n):
                    calls[name]()
                times[name].append((time.perf_counter() - t0) / n * 1e3)
        print(f"{len(atoms)} atoms: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in times.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
