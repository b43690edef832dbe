"""What a committee costs: one call of an N-member committee file against N calls of one
member (issue #14: at most 1.1 x N), from 64 to 4k atoms.

    python benchmarks/committee_cost.py [--members 4] [--sizes 64,512,4096] [--repeats 15]
        [--config benchmarks/configs/facet-small-si.json] [--out benchmarks/out]

The members are the config's architecture with random weights (the cost does not depend
on the values), exported as one committee file and member 0 alone. Both run through the
C++ PJRT runtime (facet._pjrt.Model, what ASE and LAMMPS use) on rattled Si diamond
supercells, float32; calls alternate committee / single in blocks, and each ratio is the
median over blocks of (committee call) / (N x single call). The committee's call includes
what a single model does not return: its members' forces and the energy spread.

Writes committee_cost.md / .json / .png to --out. Absolute times drift on a shared
machine; the ratios are measured back to back.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def si_cell(n_target: int):
    from ase.build import bulk

    rep = max(1, round((n_target / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * rep
    atoms.rattle(0.03, seed=0)
    return atoms


def vmapped_committee_function(config, member_params, dtype):
    """The committee's first layout, kept here for --vmap: the members' stacked weights
    evaluated with jax.vmap (facet.committee now loops over the members)."""
    import jax
    import jax.numpy as jnp

    from facet import model

    module = model.Facet(config)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[model.cast_params(p, dtype) for p in member_params])

    def fn(edge_vectors, senders, receivers, species, energy_mask):
        def one(params):
            e, g = model.energy_and_edge_gradients(module, params, edge_vectors, senders, receivers, species,
                                                   energy_mask)
            return e, g, model.forces_and_virial(edge_vectors, senders, receivers, g, species.shape[0])[0]

        energies, grads, forces = jax.vmap(one)(stacked)
        return (jnp.mean(energies, axis=0), jnp.mean(grads, axis=0), jnp.std(energies, axis=0), forces,
                jnp.sum(energies * energy_mask, axis=1))

    return fn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--sizes", default="64,512,4096")
    p.add_argument("--repeats", type=int, default=15, help="blocks per size")
    p.add_argument("--config", default=str(HERE / "configs" / "facet-small-si.json"))
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--vmap", action="store_true",
                   help="also time the vmapped layout (its compilation too: minutes for Facet-Small)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from facet_random_model import random_model

    from facet import _pjrt, checkpoint, committee, export
    from facet.config import TrainConfig
    from facet.graph import neighbour_list

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for k in range(args.members):
            cfg, params = random_model(args.config, ["Si"], seed=k)
            checkpoint.save(tmp / f"m{k}.ckpt", config=TrainConfig(model=cfg), step=0, params=params,
                            ema_params=params)
            paths.append(tmp / f"m{k}.ckpt")
        committee.export_committee(paths, tmp / "committee.hlo", dtype="float32")
        cfg, params, _ = checkpoint.load_for_inference(paths[0])
        export.export_model(cfg, params, tmp / "single.hlo", dtype="float32", stages=False)
        models = {"committee": _pjrt.Model(str(tmp / "committee.hlo")), "single": _pjrt.Model(str(tmp / "single.hlo"))}
        if args.vmap:
            looped, committee.committee_function = committee.committee_function, vmapped_committee_function
            try:
                committee.export_committee(paths, tmp / "vmapped.hlo", dtype="float32")
            finally:
                committee.committee_function = looped
            models["vmapped"] = _pjrt.Model(str(tmp / "vmapped.hlo"))
        rows = []
        for size in [int(s) for s in args.sizes.split(",")]:
            atoms = si_cell(size)
            pos, cell = atoms.positions, atoms.cell.array
            s, r, shifts = neighbour_list(pos, cell, atoms.pbc, models["single"].cutoff)
            graph = (pos[s] - pos[r] + shifts @ cell, s.astype(np.int32), r.astype(np.int32),
                     np.zeros(len(atoms), np.int32), np.ones(len(atoms)))
            calls = max(1, int(round(2000 / len(atoms))))  # calls per block: about equal work per size
            compile_s = {}
            for name, m in models.items():  # compile (or load) and warm up
                t0 = time.perf_counter()
                m(*graph)
                compile_s[name] = time.perf_counter() - t0
                m(*graph)
            times = {name: [] for name in models}
            for k in range(args.repeats):
                for name in (list(models) if k % 2 == 0 else list(models)[::-1]):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        models[name](*graph)
                    times[name].append((time.perf_counter() - t0) / calls)
            ratio = statistics.median(c / (args.members * s_) for c, s_ in zip(times["committee"], times["single"]))
            row = {"atoms": len(atoms), "edges": len(s), "single_ms": 1e3 * statistics.median(times["single"]),
                   "committee_ms": 1e3 * statistics.median(times["committee"]),
                   "committee_over_n_single": ratio, "first_call_s": compile_s}
            if args.vmap:
                row["vmapped_ms"] = 1e3 * statistics.median(times["vmapped"])
            rows.append(row)
            print(f"{row['atoms']:6d} atoms: single {row['single_ms']:.2f} ms, {args.members}-member committee "
                  f"{row['committee_ms']:.2f} ms, committee / ({args.members} x single) = {ratio:.3f}"
                  + (f"; vmapped {row['vmapped_ms']:.2f} ms" if args.vmap else "")
                  + f"; first calls (compilation) {', '.join(f'{k} {v:.1f} s' for k, v in compile_s.items())}",
                  flush=True)

    report = {"members": args.members, "config": Path(args.config).name, "dtype": "float32",
              "runtime": "PJRT (facet._pjrt)", "threads": os.environ.get("OPENBLAS_NUM_THREADS"), "rows": rows,
              "target": "committee / (N x single) <= 1.1"}
    (out / "committee_cost.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Cost of a {args.members}-member committee call", "",
             f"Architecture `{report['config']}` with random weights, float32, PJRT runtime; median over "
             f"{args.repeats} alternating blocks (`python benchmarks/committee_cost.py`).", "",
             "| atoms | edges | single (ms) | committee (ms) | committee / (N x single) | target ≤ 1.1 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ok = "✓" if row["committee_over_n_single"] <= 1.1 else "✗"
        lines.append(f"| {row['atoms']} | {row['edges']} | {row['single_ms']:.2f} | {row['committee_ms']:.2f} | "
                     f"{row['committee_over_n_single']:.3f} | {ok} |")
    (out / "committee_cost.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["atoms"] for r in rows], [r["committee_over_n_single"] for r in rows], "o-", label="measured")
    ax.axhline(1.1, color="k", ls=":", label="target 1.1")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("atoms")
    ax.set_ylabel(f"committee / ({args.members} x single)")
    ax.set_title("cost of one committee call")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "committee_cost.png", dpi=120)
    print(f"wrote {out / 'committee_cost.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
