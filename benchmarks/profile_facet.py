"""Where Facet's time goes: per-block timings of one training step on real Si batches.

    python benchmarks/profile_facet.py [--config examples/configs/facet-small.json] [--batch 32]

Times, on the same padded batch of the Si training split, (1) energies, (2)
energies+forces (the MD call) and (3) the training gradient (forces in the
loss, so a second derivative) for the full model and for variants with one
part removed; a block's cost is the difference. Writes benchmarks/out/profile.json
and prints a Markdown table. Uses whatever threads the process has (pin with taskset).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def median_time(fn, *args, repeats=5):
    import jax

    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def block_profile(fn, *args, repeats=3) -> dict[str, float]:
    """Milliseconds per call spent in each model block (conv_1, mixer_0, ...), from a
    jax.profiler trace of the compiled program, its ops mapped to blocks through the
    op_name metadata of the optimised HLO."""
    import collections
    import gzip
    import re
    import tempfile

    import jax

    hlo = fn.lower(*args).compile().as_text()
    op_block = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*op_name=\"([^\"]+)\"", line)
        if m:
            b = re.search(r"Facet\)*/([A-Za-z_0-9]+)", m.group(2))
            op_block.setdefault(m.group(1), b.group(1) if b else "outside the model (loss, forces)")
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(repeats):
            jax.block_until_ready(fn(*args))
        jax.profiler.stop_trace()
        trace = sorted(Path(tmp).rglob("*.trace.json.gz"))[-1]
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    blocks = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in op_block:
            blocks[op_block[e["name"]]] += e.get("dur", 0) / 1000 / repeats
    return {k: round(v, 2) for k, v in blocks.most_common()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(HERE.parent / "examples/configs/facet-small.json"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default="full,one_equivariant_layer,no_l2_features")
    p.add_argument("--out", default=str(HERE / "out" / "profile.json"))
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import si_data

    from facet import graph as fgraph
    from facet import losses
    from facet import model as fmodel
    from facet.config import load_config

    cfg = load_config(args.config)
    (train_s, _, _), _ = si_data.load_split()
    structures = train_s[: args.batch]
    species_index = fgraph.species_index(("Si",))
    graphs = [fgraph.build_graph(s, cfg.training_graph_cutoff, species_index) for s in structures]
    n_atoms = sum(g.n_atoms for g in graphs)
    n_edges = sum(g.n_edges for g in graphs)
    batch = fgraph.batch_graphs(graphs, n_atoms + 1, n_edges, len(graphs) + 1)
    radii, values = fgraph.degree_table(graphs, cfg.training_graph_cutoff)

    variants = {
        "full": {},
        "one_equivariant_layer": {"num_equivariant_layers": 1},
        "no_l2_features": {"hidden_irreps": "128x0e+64x1o"},
    }
    rows = []
    blocks = {}
    for name in args.variants.split(","):
        mcfg = dataclasses.replace(cfg.model, elements=("Si",), degree_radii=radii,
                                   degree_values=values, **variants[name])
        module = fmodel.Facet(mcfg)
        params = fmodel.init(module, jax.random.key(0))
        tcfg = dataclasses.replace(cfg, model=mcfg)
        jb = jax.tree.map(jnp.asarray, batch)

        @jax.jit
        def e_only(params, b):
            vec = (b.positions[b.senders] - b.positions[b.receivers]
                   + jnp.einsum("ei,eij->ej", b.edge_shifts, b.cell[b.node_graph[b.receivers]]))
            return module.apply(params, vec, b.senders, b.receivers, b.species).sum()

        e_and_f = jax.jit(lambda params, b: losses.predict(module, params, b, mcfg.graph_cutoff)[:2])
        grad = jax.jit(jax.grad(lambda params, b: losses.loss_from_sums(
            losses.error_sums(module, params, b, tcfg.model.graph_cutoff), tcfg)))
        row = {"variant": name, "params": fmodel.count_parameters(params)}
        for key, fn in (("energy_s", e_only), ("energy_forces_s", e_and_f), ("train_grad_s", grad)):
            row[key] = median_time(fn, params, jb, repeats=args.repeats)
        if name == "full":
            blocks = block_profile(grad, params, jb)
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {"blocks": blocks if "full" in args.variants.split(",") else {}, "batch_structures": args.batch,
              "atoms": n_atoms, "edges": n_edges,
              "edges_per_atom": n_edges / n_atoms, "config": args.config, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.batch} structures, {n_atoms} atoms, {n_edges} edges ({n_edges / n_atoms:.1f} per atom)\n")
    print("| variant | params | energy (s) | energy+forces (s) | training gradient (s) |\n|---|---|---|---|---|")
    for b, ms in blocks.items():
        print(f"  {b}: {ms:.1f} ms")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['energy_s']:.3f} | {r['energy_forces_s']:.3f} | "
              f"{r['train_grad_s']:.3f} |")


if __name__ == "__main__":
    main()
