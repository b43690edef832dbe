"""Command line of facet_sevennet.

    python -m facet_sevennet convert [CHECKPOINT.pth] -o sevennet0.npz      (needs torch)
    python -m facet_sevennet streamline [--model sevennet0.npz] [--data DIR] [--out DIR] ...
    python -m facet_sevennet estimate-p [--model sevennet0.npz] [--data DIR] ...
    python -m facet_sevennet export MODEL.npz -o model.hlo [--dtype float64]

Without ``--model`` the SevenNet-0 checkpoint of the installed sevenn wheel is
read (which needs torch).  ``--data`` is a directory with ``train.extxyz`` and
``test.extxyz`` (default ``benchmarks/out/si``, written by
``benchmarks/si_data.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load_model(args):
    import facet_sevennet as sevennet

    if getattr(args, "model", None):
        return sevennet.load(args.model)
    return sevennet.read_checkpoint(getattr(args, "checkpoint", None))


def _loader(structures, config, batch_size, shuffle, max_shapes=None):
    from facet.graph import BatchLoader, build_graphs, species_index
    from facet_sevennet.model import graph_cutoff

    graphs = build_graphs(structures, graph_cutoff(config), species_index(config.elements))
    return BatchLoader(graphs, batch_size, shuffle=shuffle, max_shapes=max_shapes), graphs


def _read_split(data: Path, split: str, limit: int | None = None):
    from facet.data import read_structures

    structures = read_structures(data / f"{split}.extxyz")
    if limit:
        structures = structures[:limit]
    return structures


def _metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}


def run_streamline(args, log=print) -> dict:
    """Fit, count, evaluate, fine-tune; writes the models and a JSON summary to args.out."""
    import facet_sevennet as sevennet
    from facet_sevennet import streamline as sl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config, params, info = _load_model(args)
    data = Path(args.data)
    train = _read_split(data, "train", args.max_train)
    test = _read_split(data, "test", args.max_test)

    # k(r) on the training split, with graphs at the streamlined model's graph cutoff.
    from facet.graph import build_graphs, species_index

    train_graphs = build_graphs(train, args.graph_cutoff, species_index(config.elements))
    radii, values = sl.degree_table(train_graphs, args.graph_cutoff)
    lengths = np.concatenate([np.linalg.norm(g.edge_vectors(), axis=1) for g in train_graphs])
    lengths = lengths[lengths < config.cutoff]
    # Default fit range: from the shortest training edge (rounded down to 0.1 A) to the cutoff.
    fit_min = args.fit_min if args.fit_min is not None else float(np.floor(lengths.min() * 10) / 10)
    s_config, s_params, summary = sl.streamline(
        config, params, degree_radii=radii, degree_values=values, degree_exponent=args.degree_exponent,
        graph_cutoff=args.graph_cutoff, r_min=fit_min,
    )
    summary["shortest_train_edge"] = float(lengths.min())
    summary["parameters_before"] = sevennet.count_parameters(params)
    summary["parameters_after"] = sevennet.count_parameters(s_params)
    summary["fixed_parameters"] = sevennet.count_parameters(params, trainable_only=False) - summary["parameters_before"]
    log(f"radial fits on {fit_min}-{config.cutoff} A: R^2 per layer "
        + ", ".join(f"{r:.4f}" for r in summary["r2_per_layer"]) + f"; pooled {summary['r2_pooled']:.4f}")
    log(f"parameters: {summary['parameters_before']:,} -> {summary['parameters_after']:,} "
        f"(+ {summary['fixed_parameters']} fixed per-species shifts and scales)")

    # R^2 weighted by where the training edges actually are.
    rng = np.random.default_rng(0)
    sample = rng.choice(lengths, size=min(20000, len(lengths)), replace=False)
    fit = sl.fit_filters(config, params, fit_min)
    r2_edges, r2_edges_pooled = sl.weighted_r2(config, params, fit, sample)
    summary["r2_per_layer_train_edges"] = r2_edges
    summary["r2_pooled_train_edges"] = r2_edges_pooled
    sevennet.save(out / "streamlined.npz", s_config, s_params, {**info, "streamlined": summary})

    # Test-split errors: original, streamlined, and after fine-tuning.
    results = {}
    test_loader_o, _ = _loader(test, config, args.batch_size, shuffle=False, max_shapes=args.max_shapes)
    test_loader_s, _ = _loader(test, s_config, args.batch_size, shuffle=False, max_shapes=args.max_shapes)
    t0 = time.perf_counter()
    results["sevennet0"] = sl.evaluate(config, params, test_loader_o)
    results["streamlined"] = sl.evaluate(s_config, s_params, test_loader_s)
    log(f"evaluated the test split ({len(test)} structures) in {time.perf_counter() - t0:.0f} s")
    summary["change_streamlined_vs_sevennet0"] = sl.prediction_change(results["streamlined"], results["sevennet0"])

    finetuned = {}
    if args.finetune_seconds > 0:
        targets = [("streamlined", s_config, s_params)]
        if args.finetune_original:
            targets.append(("sevennet0", config, params))
        for name, cfg, prm in targets:
            loader, _ = _loader(train, cfg, args.batch_size, shuffle=True, max_shapes=args.max_shapes)
            log(f"fine-tuning {name} for {args.finetune_seconds:.0f} s of steps (batch {args.batch_size}, "
                f"lr {args.lr:g}, {len(loader)} batches per epoch)")
            res = sl.finetune(cfg, prm, loader, seconds=args.finetune_seconds, learning_rate=args.lr,
                              energy_weight=args.energy_weight, force_weight=args.force_weight, log=log)
            finetuned[name] = res
            test_loader = test_loader_s if name == "streamlined" else test_loader_o
            results[f"{name}_finetuned"] = sl.evaluate(cfg, res.params, test_loader)
            sevennet.save(out / f"{name}_finetuned.npz", cfg, res.params,
                          {**info, "finetune": {"steps": res.steps, "seconds": res.train_seconds}})
            summary[f"finetune_{name}"] = {
                "steps": res.steps, "epochs": res.epochs, "train_seconds": res.train_seconds,
                "compile_seconds": res.compile_seconds, "batch_size": args.batch_size,
                "learning_rate": args.lr, "energy_weight": args.energy_weight,
                "force_weight": args.force_weight, "history": res.history,
            }
            if name == "streamlined":
                summary["r_max_after_finetune"] = sevennet.cutoff(res.params, cfg)
    summary["test"] = {k: _metrics(v) for k, v in results.items()}
    summary["test_structures"] = len(test)
    summary["train_structures"] = len(train)
    for k, v in summary["test"].items():
        log(f"  {k:>24}: energy MAE {1000 * v['energy_mae']:.1f} meV/atom, force MAE {1000 * v['force_mae']:.0f} meV/A")
    (out / "streamline.json").write_text(json.dumps(summary, indent=1))
    np.savez(out / "test_predictions.npz", **{f"{k}_{q}": v[q] for k, v in results.items()
                                                for q in ("energy_per_atom", "forces")})
    return summary


def run_estimate_p(args, log=print) -> dict:
    from facet_sevennet import streamline as sl

    config, params, _ = _load_model(args)
    data = Path(args.data)
    structures = []
    for split in ("train", "valid", "test"):
        path = data / f"{split}.extxyz"
        if path.exists():
            structures += _read_split(data, split)
    rng = np.random.default_rng(0)
    if args.max_structures and len(structures) > args.max_structures:
        structures = [structures[i] for i in sorted(rng.choice(len(structures), args.max_structures, replace=False))]
    loader, _ = _loader(structures, config, args.batch_size, shuffle=False)
    scaling = sl.message_scaling(config, params, loader)
    result = {"structures": len(structures), "layers": []}
    for t in range(config.num_layers):
        fits = {kind: sl.fit_exponent(scaling["k"], scaling[kind][:, t], min_k=args.min_k,
                                      groups=scaling["structure"])
                for kind in ("scalar", "total", "scalar_relative")}
        result["layers"].append(fits)
    k = np.tile(scaling["k"], config.num_layers)
    pooled_y = np.concatenate([scaling["scalar"][:, t] / np.exp(result["layers"][t]["scalar"]["intercept"])
                               for t in range(config.num_layers)])
    groups = np.tile(scaling["structure"], config.num_layers)
    result["pooled"] = sl.fit_exponent(k, pooled_y, min_k=args.min_k, groups=groups)
    result["trend"] = [sl.normalised_trend(k, pooled_y, p, args.min_k) for p in (0.5, 0.7, 1.0)]
    result["min_k"] = args.min_k
    log("message-sum scaling |m| ~ k^p (scalar channels): "
        + ", ".join(f"layer {t}: {L['scalar']['p']:.3f}" for t, L in enumerate(result["layers"]))
        + f"; pooled {result['pooled']['p']:.3f} "
        f"(95% {result['pooled']['ci95'][0]:.3f}-{result['pooled']['ci95'][1]:.3f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        np.savez(Path(args.out).with_suffix(".npz"), **scaling)
    return result


def run_export(args) -> int:
    import facet_sevennet as sevennet
    from facet.export import describe
    from facet_sevennet.export import export_model

    config, params, info = sevennet.load(args.model)
    header = export_model(config, params, args.output, dtype=args.dtype, platforms=tuple(args.platforms.split(",")),
                          info=info)
    print(describe(header, args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facet_sevennet", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="read a SevenNet .pth checkpoint (torch) into a .npz")
    c.add_argument("checkpoint", nargs="?", default=None, help="default: SevenNet-0 from the sevenn wheel")
    c.add_argument("-o", "--output", required=True)

    def model_args(q):
        q.add_argument("--model", help="converted .npz (default: read SevenNet-0 from the sevenn wheel)")
        q.add_argument("--checkpoint", help="a SevenNet .pth checkpoint instead of --model")
        q.add_argument("--data", default="benchmarks/out/si", help="directory with train/test .extxyz")
        q.add_argument("--batch-size", type=int, default=16)

    s = sub.add_parser("streamline", help="fit linear radial filters, collapse the readout, fine-tune")
    model_args(s)
    s.add_argument("--out", default="sevennet_streamlined", help="output directory")
    s.add_argument("--fit-min", type=float, default=None,
                   help="fit the filters on [fit-min, cutoff] (A); default: the shortest training edge, "
                        "rounded down to 0.1 A")
    s.add_argument("--degree-exponent", type=float, default=0.7, help="p of k(r_max)^p")
    s.add_argument("--graph-cutoff", type=float, default=5.25, help="upper bound of the trainable r_max (A)")
    s.add_argument("--finetune-seconds", type=float, default=300.0,
                   help="wall time of fine-tuning steps, compilations excluded (0: no fine-tuning)")
    s.add_argument("--finetune-original", action="store_true", help="also fine-tune SevenNet-0 itself")
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--energy-weight", type=float, default=10.0)
    s.add_argument("--force-weight", type=float, default=1.0)
    s.add_argument("--max-shapes", type=int, default=3, help="padded batch shapes (compilations) in fine-tuning")
    s.add_argument("--max-train", type=int, default=None)
    s.add_argument("--max-test", type=int, default=None)

    e = sub.add_parser("estimate-p", help="fit |message sum| ~ k^p on SevenNet-0")
    model_args(e)
    e.add_argument("--max-structures", type=int, default=1500)
    e.add_argument("--min-k", type=float, default=4.0, help="ignore atoms with fewer neighbours")
    e.add_argument("--out", default=None, help="JSON file for the fit (an .npz with the raw data next to it)")

    x = sub.add_parser("export", help="write a Facet model file (ASE, LAMMPS) from a .npz")
    x.add_argument("model")
    x.add_argument("-o", "--output", required=True)
    x.add_argument("--dtype", choices=("float32", "float64"), default=None)
    x.add_argument("--platforms", default="cpu")
    return p


def main(argv=None) -> int:
    from facet.errors import FacetError, exit_with

    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except (FacetError, FileNotFoundError) as e:
        return exit_with(e)


def _main(args) -> int:
    if args.command == "convert":
        import facet_sevennet as sevennet

        config, params, info = sevennet.read_checkpoint(args.checkpoint)
        sevennet.save(args.output, config, params, info)
        print(f"{args.output}: {len(config.elements)} elements, {config.num_layers} layers, "
              f"{sevennet.count_parameters(params):,} trainable parameters")
        return 0
    if args.command == "streamline":
        run_streamline(args)
        return 0
    if args.command == "estimate-p":
        run_estimate_p(args)
        return 0
    if args.command == "export":
        return run_export(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
