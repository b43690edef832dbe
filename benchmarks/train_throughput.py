"""Training throughput of Facet on the bundled data: structures/s, atoms/s,
compilations and peak memory, written as Markdown and JSON.

    python benchmarks/train_throughput.py [--config examples/configs/facet-small.json]
        [--steps 30] [--out benchmarks/out]

Compilations are counted from jax's own compile events, not inferred. Peak
memory is the process's maximum resident set size (CPU). Run it on an idle
machine; numbers from a loaded one are only good for ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append",
                   default=None, help="config file(s) to measure (default: Facet-Small and Facet-Tiny)")
    p.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--one", metavar="JSON", help=argparse.SUPPRESS)  # internal: measure one config, write JSON
    args = p.parse_args()
    configs = args.config or [str(ROOT / "examples/configs/facet-small.json"),
                              str(ROOT / "examples/configs/facet-tiny.json")]
    if not args.one and len(configs) > 1:
        # One process per config, so that peak memory is each config's own.
        import os
        import subprocess
        import tempfile

        load = os.getloadavg()
        results = []
        for c in configs:
            with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
                subprocess.run([sys.executable, __file__, "--config", c, "--steps", str(args.steps),
                                "--out", args.out, "--one", tmp.name], check=True)
                results.append(json.loads(Path(tmp.name).read_text()))
        return report(results, Path(args.out), load)

    import jax
    import numpy as np

    from facet import train
    from facet.config import load_config
    from facet.data import default_dataset_path

    compiles = {"count": 0, "seconds": 0.0}

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles["count"] += 1
            compiles["seconds"] += duration

    jax.monitoring.register_event_duration_secs_listener(on_event)

    results = []
    for config_path in configs:
        cfg = load_config(config_path)
        data = train.prepare_data([default_dataset_path()], cfg, log=lambda *a: None)
        trainer = train.Trainer(cfg, data, Path(args.out) / "run", progress=False, log=lambda *a: None)
        shapes = trainer.train_loader.distinct_shapes(range(10))
        c0 = dict(compiles)
        batches = list(trainer.train_loader.epoch(0))
        # Warm-up: one step per distinct shape of the first epoch (compiles each once).
        seen, t0 = set(), time.perf_counter()
        for b in batches:
            key = (b.species.shape, b.senders.shape)
            if key not in seen:
                seen.add(key)
                out = trainer._update(trainer.params, trainer.opt_state, trainer._put(b), 1.0)
                jax.block_until_ready(out)
                trainer.params, trainer.opt_state = out[0], out[1]
        warmup_s = time.perf_counter() - t0
        c1 = dict(compiles)
        structures = atoms = 0
        t0 = time.perf_counter()
        for k in range(args.steps):
            b = batches[k % len(batches)]
            out = trainer._update(trainer.params, trainer.opt_state, trainer._put(b), 1.0)
            trainer.params, trainer.opt_state = out[0], out[1]
            structures += int(np.sum(b.graph_mask))
            atoms += int(np.sum(b.node_mask))
        jax.block_until_ready(trainer.params)
        elapsed = time.perf_counter() - t0
        results.append({
            "config": Path(config_path).name,
            "parameters": trainer.num_params,
            "hidden_irreps": cfg.model.hidden_irreps,
            "batch_size": cfg.batch_size,
            "timed_steps": args.steps,
            "seconds_per_step": elapsed / args.steps,
            "structures_per_s": structures / elapsed,
            "atoms_per_s": atoms / elapsed,
            "distinct_batch_shapes_10_epochs": len(shapes),
            "compilations_warmup": c1["count"] - c0["count"],
            "compile_seconds_warmup": round(c1["seconds"] - c0["seconds"], 2),
            "compilations_timed_steps": compiles["count"] - c1["count"],
            "warmup_seconds": round(warmup_s, 2),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })
        print(json.dumps(results[-1]), flush=True)
    if args.one:
        Path(args.one).write_text(json.dumps(results[0]))
        return 0
    return report(results, Path(args.out), __import__("os").getloadavg())


def report(results, out: Path, load) -> int:
    import jax

    out.mkdir(parents=True, exist_ok=True)
    machine = {"python": sys.version.split()[0], "jax": jax.__version__, "platform": platform.platform(),
               "cpu_count": __import__("os").cpu_count(), "devices": [str(d) for d in jax.devices()],
               "load_average_at_start": [round(x, 2) for x in load]}
    (out / "train_throughput.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    lines = ["# Facet training throughput (bundled SiO2 data)", "",
             f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, jax {machine['jax']}, "
             f"load average at start {machine['load_average_at_start']} (other jobs inflate times).", "",
             "| config | params | batch | s/step | structures/s | atoms/s | shapes (10 epochs) "
             "| compiles (warm-up / timed) | compile s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['config']} | {r['parameters']:,} | {r['batch_size']} | {r['seconds_per_step']:.2f} | "
                     f"{r['structures_per_s']:.1f} | {r['atoms_per_s']:.0f} | {r['distinct_batch_shapes_10_epochs']} | "
                     f"{r['compilations_warmup']} / {r['compilations_timed_steps']} | {r['compile_seconds_warmup']} | "
                     f"{r['peak_rss_mb']:.0f} |")
    (out / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
