"""Energy and force errors of one model on a labelled extxyz file (the Si DFT test split).

    .venv-peers/bin/python benchmarks/peers/accuracy.py --model sevennet-0 \
        --data benchmarks/out/si/test.extxyz --out benchmarks/out/peers/accuracy_sevennet-0.json
    .venv-peers/bin/python benchmarks/peers/accuracy.py --model facet \
        --model-path export/facet-small-si.hlo --data benchmarks/out/si/test.extxyz --out X.json
    .venv-mace/bin/python benchmarks/peers/accuracy.py --model mace --model-path run/si.model ...

Reported (JSON, plus a one-line summary on stdout):

* ``energy_mae_mev_atom``: mean over structures of |E_pred - E_ref| / n_atoms;
* ``energy_offset_mev_atom``: the mean of (E_pred - E_ref) / n_atoms, and
  ``energy_mae_shifted_mev_atom`` / ``energy_rmse_shifted_mev_atom``: the errors after
  subtracting it.  A universal model is referenced to its own DFT settings
  (MPtrj: VASP PBE with MP's pseudopotentials and corrections) while the test set
  was computed with other settings, so its absolute per-atom energies differ from
  the set's by a near-constant; the shifted error measures what a fixed
  reference change cannot fix (relative energies, which is what dynamics sees).
  The offset is fitted on the evaluated set itself (one number; ``--offset-from``
  fits it on another file instead, e.g. the validation split);
* ``force_mae_mev_A`` / ``force_rmse_mev_A``: over all force components;
* ``stress_mae_gpa`` when the file has stresses;
* ``by_energy_band``: the same split by reference energy above the set's lowest
  per-atom energy (< 0.25, 0.25-1, > 1 eV/atom): near-equilibrium vs distorted;
* per-structure per-atom energies (reference and predicted) for parity plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calculators  # noqa: E402  (stdlib only at import)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=list(calculators.MODELS))
    ap.add_argument("--model-path", help="model file for mace / sevennet / nequix / facet")
    ap.add_argument("--dtype", help="model dtype where selectable (mace: float32 | float64)")
    ap.add_argument("--data", default=str(calculators.REPO / "benchmarks/out/si/test.extxyz"),
                    help="labelled extxyz (energy=, forces); default: the Si test split")
    ap.add_argument("--out", help="JSON output (default: benchmarks/out/peers/accuracy_<model>.json)")
    ap.add_argument("--offset-from", help="fit the per-atom energy offset on this labelled file instead")
    ap.add_argument("--limit", type=int, help="evaluate only the first N structures (quick checks)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", help="pin this process to these CPUs, e.g. '1' or '0,1'")
    return ap.parse_args(argv)


def read_labelled(path, limit=None):
    """[(atoms without calculator, E_ref, F_ref, stress_ref or None)]."""
    from ase.io import read

    index = f":{limit}" if limit else ":"
    out = []
    for atoms in read(path, index=index, format="extxyz"):
        calc = atoms.calc
        results = dict(getattr(calc, "results", {}) or {})
        energy = results.get("energy", atoms.info.get("energy"))
        forces = results.get("forces", atoms.arrays.get("forces"))
        stress = results.get("stress", atoms.info.get("stress"))
        if energy is None or forces is None:
            raise SystemExit(f"{path}: every structure needs energy= and forces")
        atoms.calc = None
        out.append((atoms, float(energy), forces.copy(), None if stress is None else stress.copy()))
    return out


BANDS = [(0.0, 0.25), (0.25, 1.0), (1.0, float("inf"))]  # eV/atom above the lowest reference


def _rung(x: int, quantum: int) -> int:
    """Smallest of quantum * {4, 5, 6, 7} * 2^k (k >= 0) that is >= x."""
    r = 4
    while True:
        for m in (4, 5, 6, 7):
            if m * r // 4 * quantum >= x:
                return m * r // 4 * quantum
        r *= 2


def bucket_nequix_padding(calc) -> None:
    """Pad Nequix graphs to a geometric ladder of sizes (4 rungs per octave).

    NequixCalculator pads edges to the first structure's count (x1.1) and grows it
    whenever exceeded, so a set of differently sized cells compiles again and again
    (about 13 s each here).  Padding with masked graphs does not change results; it
    only bounds the number of distinct shapes.  Used for accuracy runs only.
    """
    import types

    import jraph

    def pad(self, graph, numbers_changed=False):
        n_node = _rung(int(graph.n_node.sum()) + 1, 8)
        n_edge = _rung(max(int(graph.n_edge.sum()), 1), 64)
        return jraph.pad_with_graphs(graph, n_node=n_node, n_edge=n_edge, n_graph=2)

    calc._pad_graph_jax = types.MethodType(pad, calc)


def predict(calc, atoms, want_stress):
    import numpy as np

    atoms = atoms.copy()
    atoms.calc = calc
    e = float(atoms.get_potential_energy())
    f = np.array(atoms.get_forces(), dtype=np.float64)
    s = np.array(atoms.get_stress(), dtype=np.float64) if want_stress else None
    return e, f, s


def evaluate(calc, data, progress=True):
    import numpy as np

    n_atoms = []
    de = []  # per-atom energy differences, eV/atom
    e_ref, e_pred = [], []
    df = []
    fe_struct = []  # per-structure force MAE, eV/A
    ds = []
    t0 = time.perf_counter()
    for k, (atoms, E, F, S) in enumerate(data):
        e, f, s = predict(calc, atoms, S is not None)
        n = len(atoms)
        n_atoms.append(n)
        e_ref.append(E / n)
        e_pred.append(e / n)
        de.append((e - E) / n)
        df.append((f - F).ravel())
        fe_struct.append(float(np.abs(f - F).mean()))
        if S is not None:
            S = np.asarray(S, dtype=np.float64)
            if S.shape == (3, 3):
                S = S[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            ds.append(s - S)
        if progress and (k + 1) % 64 == 0:
            el = time.perf_counter() - t0
            print(f"  {k + 1}/{len(data)} structures, {el:.0f} s", file=sys.stderr, flush=True)
    return {
        "n_atoms": np.array(n_atoms), "de": np.array(de), "e_ref": np.array(e_ref), "e_pred": np.array(e_pred),
        "df": np.concatenate(df) if df else np.zeros(0), "ds": np.array(ds) if ds else None,
        "fe_struct": np.array(fe_struct),
        "seconds": time.perf_counter() - t0,
    }


def metrics(ev, offset=None):
    import numpy as np

    de = ev["de"]
    if offset is None:
        offset = float(de.mean())
    shifted = de - offset
    out = {
        "n_structures": int(len(de)),
        "n_atoms": int(ev["n_atoms"].sum()),
        "n_force_components": int(ev["df"].size),
        "energy_mae_mev_atom": 1e3 * float(np.abs(de).mean()),
        "energy_rmse_mev_atom": 1e3 * float(np.sqrt((de ** 2).mean())),
        "energy_offset_mev_atom": 1e3 * offset,
        "energy_offset_median_mev_atom": 1e3 * float(np.median(de)),
        "energy_mae_shifted_mev_atom": 1e3 * float(np.abs(shifted).mean()),
        "energy_rmse_shifted_mev_atom": 1e3 * float(np.sqrt((shifted ** 2).mean())),
        "force_mae_mev_A": 1e3 * float(np.abs(ev["df"]).mean()),
        "force_rmse_mev_A": 1e3 * float(np.sqrt((ev["df"] ** 2).mean())),
    }
    # by reference energy above the set's lowest per-atom energy: near-equilibrium
    # structures vs strained / high-energy ones (where MPtrj-trained models soften)
    rel = ev["e_ref"] - ev["e_ref"].min()
    n3 = 3 * ev["n_atoms"]
    bands = []
    for lo, hi in BANDS:
        sel = (rel >= lo) & (rel < hi)
        if not sel.any():
            continue
        bands.append({
            "above_min_ev_atom": [lo, None if hi == float("inf") else hi],
            "n_structures": int(sel.sum()),
            "energy_offset_mev_atom": 1e3 * float(de[sel].mean()),
            "energy_mae_mev_atom": 1e3 * float(np.abs(de[sel]).mean()),
            "energy_mae_shifted_mev_atom": 1e3 * float(np.abs(shifted[sel]).mean()),
            "force_mae_mev_A": 1e3 * float((ev["fe_struct"][sel] * n3[sel]).sum() / n3[sel].sum()),
        })
    out["by_energy_band"] = bands
    if ev["ds"] is not None:
        gpa = 160.21766208  # eV/A^3 -> GPa
        out["stress_mae_gpa"] = gpa * float(np.abs(ev["ds"]).mean())
        out["stress_rmse_gpa"] = gpa * float(np.sqrt((ev["ds"] ** 2).mean()))
    return out


def _rel(path) -> str:
    """``path`` relative to the repository when inside it (results carry no machine paths)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(calculators.REPO))
    except ValueError:
        return p.name


def main(argv=None):
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    thread_env = calculators.set_thread_env(args.threads)

    out_path = Path(args.out) if args.out else calculators.REPO / "benchmarks/out/peers" / f"accuracy_{args.model}.json"
    try:
        calc = calculators.make_calculator(args.model, args.model_path, args.dtype, threads=args.threads)
    except calculators.ModelUnavailable as exc:
        raise SystemExit(f"accuracy.py: {exc}") from None

    if args.model in ("nequix", "nequix-mp-1"):
        bucket_nequix_padding(calc)
    data = read_labelled(args.data, args.limit)
    bad = {s for atoms, *_ in data for s in calculators.unsupported_elements(calc, atoms)}
    if bad:
        raise SystemExit(f"accuracy.py: model {args.model} does not know element(s) {', '.join(sorted(bad))}")
    print(f"{args.model}: {len(data)} structures from {args.data}", file=sys.stderr)
    ev = evaluate(calc, data)

    offset = None
    offset_source = "evaluated set (mean)"
    if args.offset_from:
        ref = read_labelled(args.offset_from)
        offset = float(evaluate(calc, ref, progress=False)["de"].mean())
        offset_source = f"{Path(args.offset_from).name} (mean)"
    result = {
        "model": calculators.describe(args.model, calc=calc),
        "data": _rel(args.data),
        "offset_fitted_on": offset_source,
        "metrics": metrics(ev, offset),
        "seconds": ev["seconds"],
        "threads": args.threads,
        "thread_env": thread_env,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "versions": calculators.versions(),
        "per_structure": {
            "n_atoms": ev["n_atoms"].tolist(),
            "energy_ref_ev_atom": [round(x, 6) for x in ev["e_ref"].tolist()],
            "energy_pred_ev_atom": [round(x, 6) for x in ev["e_pred"].tolist()],
        },
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    m = result["metrics"]
    print(f"{args.model}: E MAE {m['energy_mae_mev_atom']:.1f} meV/atom "
          f"(offset {m['energy_offset_mev_atom']:+.1f}; after removing it {m['energy_mae_shifted_mev_atom']:.1f}), "
          f"F MAE {m['force_mae_mev_A']:.1f} meV/A, {m['n_structures']} structures, "
          f"{ev['seconds']:.0f} s -> {out_path}")


if __name__ == "__main__":
    main()
