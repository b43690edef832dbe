"""Export a Facet model with random weights, for timing on structures whose
elements the trained Si model does not know (the multi-element crystal and the
relaxation set). Speed does not depend on the weight values, only on the
architecture and the cutoff, which is set to the Si model's trained cutoff so
both see the same neighbour counts. Every report labels it "random weights".

    python benchmarks/facet_random_model.py --elements Si Na Cl Sr Ti O ... \
        [--config benchmarks/configs/facet-small-si.json] [--cutoff 5.0] -o model.hlo
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def random_model(config_path, elements, cutoff=None, seed=0):
    """(model config, parameters) of the config's architecture with random weights, every
    layer scale non-zero so that every block really computes, as in a trained model."""
    import jax

    from facet import graph, model
    from facet.config import load_config

    cfg = load_config(config_path).model
    cutoff = cutoff or cfg.r_max_init
    radii = graph.degree_radii(cfg.graph_cutoff)
    # A dense crystal's neighbour count (about 0.05 atoms/Å^3): only normalises messages.
    values = tuple(float(4.0 / 3.0 * math.pi * r**3 * 0.05) for r in radii)
    cfg = dataclasses.replace(cfg, elements=tuple(elements), degree_radii=tuple(float(r) for r in radii),
                              degree_values=values, r_max_init=min(cutoff, cfg.graph_cutoff - 1e-3))
    params = model.init(model.Facet(cfg), jax.random.key(seed))
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: rng.normal(0.0, 0.3, x.shape).astype(x.dtype)
        if "layer_scale" in jax.tree_util.keystr(path) else x, params)
    return cfg, params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--elements", nargs="+", required=True)
    p.add_argument("--config", default=str(HERE / "configs" / "facet-small-si.json"))
    p.add_argument("--cutoff", type=float, default=None,
                   help="r_max in Å (default: the config's r_max_init); use the trained model's cutoff")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--platforms", default="cpu", help="comma-separated, e.g. cpu,cuda")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)

    from facet import export

    cfg, params = random_model(args.config, args.elements, args.cutoff)
    header = export.export_model(cfg, params, args.output, dtype=args.dtype,
                                 platforms=tuple(p.strip() for p in args.platforms.split(",")),
                                 info={"weights": "random (timing only)", "elements": list(args.elements)})
    print(export.describe(header, args.output))


if __name__ == "__main__":
    main()
