"""Where a training run's time goes, step by step, with the real Trainer and loader.

    python benchmarks/profile_training.py [--config benchmarks/configs/facet-small-si.json]
        [--set key=value ...] [--steps 40] [--out benchmarks/out/profile_training.json]

On the Si training split (benchmarks/si_data.py writes it), this builds the same
Trainer `python -m facet.train` builds and measures, on one core with one thread
(it pins itself unless --threads is given):

* padding: padded / real atoms and edges over one epoch of the loader, and
  edges per atom of the training graph at several cutoffs;
* compilation: seconds to compile the training step and the evaluation step
  per distinct batch shape;
* the steady-state step, split into batch assembly (numpy), host->device
  transfer, and the jitted update (blocked on), and structures/s and ms per
  real atom from those;
* the achieved FLOP/s of the update (XLA's cost analysis / measured time)
  beside this core's measured float32 matmul rate;
* a validation pass.

Writes a JSON report and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(HERE / "configs" / "facet-small-si.json"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", default=str(HERE / "out" / "si" / "train.extxyz"))
    p.add_argument("--steps", type=int, default=40, help="timed steady-state steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "out" / "profile_training.json"))
    return p.parse_args(argv)


def pin_threads(threads: int):
    """One core, one thread, as the training comparison runs (before jax is imported)."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        except (AttributeError, OSError):
            pass


def matmul_peak(dtype="float32", n=512, seconds=2.0) -> float:
    """Measured FLOP/s of an n x n matmul on this process's threads."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        jax.block_until_ready(f(a))
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - t0)


def flops_of(jitted, *args) -> float | None:
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best-effort on some backends
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "python"))
    from facet import train as ftrain
    from facet.config import load_config

    t_launch = time.time()
    cfg = load_config(args.config, args.set)
    data = ftrain.prepare_data([args.data], cfg, split_indices=None, log=lambda *_: None)
    t_data = time.time() - t_launch
    out_dir = Path(args.out).parent / "profile_training_run"
    trainer = ftrain.Trainer(cfg, data, out_dir, log=lambda *_: None, progress=False)
    loader = trainer.train_loader

    # Padding over one epoch.
    real_atoms = real_edges = pad_atoms = pad_edges = real_graphs = 0
    shapes = set()
    for idx in loader.batch_indices(0):
        n, e, g = loader.batch_shape(idx)
        shapes.add((n, e, g))
        pad_atoms += n
        pad_edges += e
        real_atoms += int(loader._atoms[idx].sum())
        real_edges += int(loader._edges[idx].sum())
        real_graphs += len(idx)
    edges_per_atom = {}
    lengths = np.concatenate([np.linalg.norm(g.edge_vectors(), axis=1) for g in data.train])
    n_train_atoms = sum(g.n_atoms for g in data.train)
    for r in (4.0, 4.5, 5.0, 5.5, 6.0):
        if r <= cfg.model.graph_cutoff + 1e-9:
            edges_per_atom[f"{r:g}"] = float(np.sum(lengths < r) / n_train_atoms)

    # Compilation per shape (train and eval), on one batch of each shape.
    batches = {}
    for batch in loader.epoch(0):
        key = (batch.species.shape[0], batch.senders.shape[0])
        batches.setdefault(key, batch)
        if len(batches) == len(shapes):
            break
    compile_s = {}
    for key, batch in batches.items():
        put = trainer._put(batch)
        t0 = time.perf_counter()
        jax.block_until_ready(trainer._update(trainer.params, trainer.opt_state, put, 1.0))
        compile_s[f"train {key}"] = time.perf_counter() - t0
    vbatch = next(iter(trainer.valid_loader.epoch(0)))
    t0 = time.perf_counter()
    jax.block_until_ready(trainer._eval(trainer.params, trainer._put(vbatch)))
    compile_s["eval"] = time.perf_counter() - t0

    # Steady state: the training loop's work split into its parts.
    t_assemble = t_put = t_update = 0.0
    structures = atoms = 0
    params, opt_state = trainer.params, trainer.opt_state
    it = loader.epoch(1)
    flops = None
    for step in range(args.steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = loader.epoch(2 + step)
            batch = next(it)
        t1 = time.perf_counter()
        put = trainer._put(batch)
        jax.block_until_ready(put)
        t2 = time.perf_counter()
        params, opt_state, loss, sums, finite = trainer._update(params, opt_state, put, 1.0)
        jax.block_until_ready(loss)
        t3 = time.perf_counter()
        t_assemble += t1 - t0
        t_put += t2 - t1
        t_update += t3 - t2
        structures += int(batch.graph_mask.sum())
        atoms += int(batch.node_mask.sum())
        if flops is None:
            flops = flops_of(trainer._update, params, opt_state, put, 1.0)
    total = t_assemble + t_put + t_update
    t0 = time.perf_counter()
    trainer.evaluate(trainer.valid_loader)
    t_valid = time.perf_counter() - t0
    peak = matmul_peak()
    report = {
        "config": args.config, "overrides": args.set, "threads": args.threads,
        "parameters": trainer.num_params, "batch_size": cfg.batch_size,
        "data_and_graphs_s": t_data,
        "padding": {"atoms": pad_atoms / real_atoms, "edges": pad_edges / real_edges,
                    "graphs_per_batch": real_graphs / len(loader), "shapes": sorted(shapes)},
        "training_graph_cutoff_A": data.train[0].cutoff,
        "edges_per_atom_by_cutoff": edges_per_atom,
        "edges_per_atom_training_graph": float(sum(g.n_edges for g in data.train) / n_train_atoms),
        "compile_s": compile_s,
        "steps": args.steps,
        "step_ms": {"assemble": 1e3 * t_assemble / args.steps, "transfer": 1e3 * t_put / args.steps,
                    "update": 1e3 * t_update / args.steps, "total": 1e3 * total / args.steps},
        "structures_per_s": structures / total, "ms_per_real_atom": 1e3 * total / atoms,
        "update_flops": flops, "achieved_flop_per_s": (flops * args.steps / t_update) if flops else None,
        "matmul_peak_flop_per_s": peak,
        "validation_pass_s": t_valid, "validation_structures": len(data.valid),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    s = report["step_ms"]
    print(f"| parameters | {report['parameters']:,} |\n|---|---|")
    print(f"| padding (atoms / edges) | {report['padding']['atoms']:.2f}x / {report['padding']['edges']:.2f}x, "
          f"{len(shapes)} shapes, {report['padding']['graphs_per_batch']:.1f} graphs per batch |")
    print(f"| training graph | {report['training_graph_cutoff_A']} A, "
          f"{report['edges_per_atom_training_graph']:.1f} edges per atom |")
    print(f"| edges per atom by cutoff | {', '.join(f'{k} A: {v:.1f}' for k, v in edges_per_atom.items())} |")
    print(f"| compile (s) | {', '.join(f'{k}: {v:.1f}' for k, v in compile_s.items())} |")
    print(f"| step (ms) | assemble {s['assemble']:.1f}, transfer {s['transfer']:.1f}, update {s['update']:.1f}, "
          f"total {s['total']:.1f} |")
    print(f"| throughput | {report['structures_per_s']:.1f} structures/s, "
          f"{report['ms_per_real_atom']:.2f} ms per real atom |")
    if flops:
        print(f"| achieved FLOP/s | {report['achieved_flop_per_s'] / 1e9:.2f} GFLOP/s "
              f"({report['achieved_flop_per_s'] / peak:.1%} of the {peak / 1e9:.1f} GFLOP/s matmul rate) |")
    print(f"| validation pass | {t_valid:.1f} s for {len(data.valid)} structures |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
