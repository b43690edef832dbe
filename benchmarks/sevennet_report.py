"""SevenNet-0 in JAX and SevenNet-Streamlined (issue #6): port accuracy, radial-filter
fits, parameter counts, the message-sum scaling exponent p, fine-tuning on the
pyxtal Si set, and the exported model in ASE and LAMMPS.

    .venv-peers/bin/python benchmarks/sevennet_report.py [--out benchmarks/out/sevennet]
        [--data benchmarks/out/si] [--finetune-seconds 300] [--p-structures 1500] [--reuse]

Needs the peer environment (torch + sevenn: ``bash benchmarks/peers/setup_envs.sh``)
and the Si splits (``.venv/bin/python benchmarks/si_data.py``).  Writes
``benchmarks/SEVENNET.md`` and its figures (``benchmarks/figures/sevennet_*.png``);
intermediate results (JSON, .npz, model files) go to --out.  ``--reuse`` takes the
p estimate and the streamline/fine-tune results from a previous run in --out
instead of recomputing them (the port and export checks always run); ``--render-only``
rewrites the report and figures from a previous run's saved results.

Runs on one CPU thread (set before numpy, torch and jax are imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "benchmarks" / "figures"
REPORT = REPO / "benchmarks" / "SEVENNET.md"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- structures


def port_structures():
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.spacegroup import crystal

    out = {}
    a = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    a.rattle(0.05, seed=1)
    out["Si diamond 64 atoms, rattled"] = a
    a = bulk("Si", "diamond", a=5.43)
    a.set_cell(a.cell[:] @ np.array([[1.02, 0.03, 0.0], [0.0, 0.97, 0.01], [0.0, 0.0, 1.01]]), scale_atoms=True)
    a.positions[1] += [0.05, -0.03, 0.02]
    out["Si primitive 2 atoms, strained"] = a
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.08, seed=2)
    out["NaCl 8 atoms, rattled"] = a
    a = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], spacegroup=154,
                cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    a.rattle(0.04, seed=3)
    out["alpha-quartz SiO2, rattled"] = a
    a = molecule("CH3CH2OH")
    a.rattle(0.03, seed=4)
    out["ethanol (no cell)"] = a
    rng = np.random.default_rng(5)
    symbols = ["Li", "Fe", "O", "O", "Hf", "N"]
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)[: len(symbols)]
    pos = grid * 2.1 + rng.normal(scale=0.1, size=(len(symbols), 3))
    out["Li Fe O2 Hf N, random triclinic cell"] = Atoms(
        symbols, positions=pos, cell=np.diag([4.3, 4.1, 4.4]) + 0.2 * rng.normal(size=(3, 3)), pbc=True)
    return out


def si_test_structures(data: Path, n: int):
    from ase.io import read

    frames = read(data / "test.extxyz", ":")
    idx = np.random.default_rng(0).choice(len(frames), size=min(n, len(frames)), replace=False)
    return {f"Si test split #{i}": frames[i] for i in sorted(idx)}


def evaluate_calc(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


# Force and stress errors are relative to the structure's largest component, but never to
# less than these floors: symmetric cells have forces that vanish (1e-8 eV/A), where any
# ratio would only measure float32 noise.
FORCE_FLOOR, STRESS_FLOOR = 0.1, 0.01  # eV/A, eV/A^3


def rel_errors(ours, ref):
    e = {"energy": abs(ours["energy"] - ref["energy"]) / abs(ref["energy"])}
    for key, floor in (("forces", FORCE_FLOOR), ("stress", STRESS_FLOOR)):
        if key in ref:
            e[key] = float(np.abs(ours[key] - ref[key]).max() / max(np.abs(ref[key]).max(), floor))
    return e


def timed(calc, atoms, repeats=5):
    evaluate_calc(calc, atoms)  # compile / warm up
    times = []
    for i in range(repeats):
        a = atoms.copy()
        a.positions += 1e-4 * (i + 1)  # a new geometry every call (no cached result)
        t0 = time.perf_counter()
        evaluate_calc(calc, a)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ----------------------------------------------------------------------------- stages


def stage_port(config, params, info, data: Path, n_si: int) -> dict:
    from sevenn.calculator import SevenNetCalculator

    from facet_sevennet import export as sx

    log("port: sevenn calculator vs the JAX port")
    torch_calc = SevenNetCalculator("7net-0", device="cpu")
    jax64 = sx.calculator(config, params, dtype="float64", info=info)
    jax32 = sx.calculator(config, params, dtype="float32", info=info)
    structures = {**port_structures(), **si_test_structures(data, n_si)}
    rows = []
    for name, atoms in structures.items():
        ref = evaluate_calc(torch_calc, atoms)
        row = {"name": name, "atoms": len(atoms), "energy": ref["energy"]}
        ours64, ours32 = evaluate_calc(jax64, atoms), evaluate_calc(jax32, atoms)
        row["float64"] = rel_errors(ours64, ref)
        row["float32"] = rel_errors(ours32, ref)
        row["max_force"] = float(np.abs(ref["forces"]).max())
        row["abs_force_error"] = float(np.abs(ours64["forces"] - ref["forces"]).max())
        rows.append(row)
        log(f"  {name}: float64 {max(row['float64'].values()):.1e}, float32 {max(row['float32'].values()):.1e}")
    big = port_structures()["Si diamond 64 atoms, rattled"]
    timing = {"sevenn (torch, float32)": timed(torch_calc, big), "JAX port float32": timed(jax32, big),
              "JAX port float64": timed(jax64, big)}
    return {"rows": rows, "timing_64_atoms": timing}


def stage_fits(config, params, data: Path, fit_min: float) -> dict:
    from facet.data import read_structures
    from facet.graph import build_graphs, species_index
    from facet_sevennet import streamline as sl

    log("fits: R^2 of linear radial filters for several distance ranges")
    train = read_structures(data / "train.extxyz")
    graphs = build_graphs(train, config.cutoff, species_index(config.elements))
    lengths = np.concatenate([np.linalg.norm(g.edge_vectors(), axis=1) for g in graphs])
    sample = np.random.default_rng(0).choice(lengths, size=min(20000, len(lengths)), replace=False)
    rows = []
    for r_min in sorted({0.5, 1.0, 1.5, 2.0, fit_min}):
        fit = sl.fit_filters(config, params, r_min)
        r2_edges, pooled_edges = sl.weighted_r2(config, params, fit, sample)
        rows.append({"r_min": r_min, "r2": fit.r2, "pooled": fit.r2_pooled, "r2_edges": r2_edges,
                     "pooled_edges": pooled_edges})
    hist, edges = np.histogram(lengths, bins=90, range=(0.5, 5.0))
    return {"rows": rows, "edge_hist": hist.tolist(), "edge_bins": edges.tolist(),
            "shortest_edge": float(lengths.min())}


def stage_p(args, out: Path) -> dict:
    from facet_sevennet.__main__ import run_estimate_p

    path = out / "p_estimate.json"
    if args.reuse and path.exists() and path.with_suffix(".npz").exists():
        log("p: reusing " + str(path))
        return json.loads(path.read_text())
    log(f"p: message sums of SevenNet-0 on {args.p_structures} Si structures")
    ns = SimpleNamespace(model=str(out / "sevennet0.npz"), checkpoint=None, data=str(args.data), batch_size=16,
                         max_structures=args.p_structures, min_k=args.min_k, out=str(path))
    return run_estimate_p(ns, log=log)


def stage_streamline(args, out: Path, p: float) -> dict:
    from facet_sevennet.__main__ import run_streamline

    path = out / "streamlined" / "streamline.json"
    if args.reuse and path.exists():
        log("streamline: reusing " + str(path))
        return json.loads(path.read_text())
    log(f"streamline: fit, evaluate, fine-tune ({args.finetune_seconds:.0f} s each), p = {p}")
    ns = SimpleNamespace(model=str(out / "sevennet0.npz"), checkpoint=None, data=str(args.data),
                         out=str(out / "streamlined"), fit_min=None, degree_exponent=p, graph_cutoff=5.25,
                         finetune_seconds=args.finetune_seconds, finetune_original=True, lr=args.lr,
                         energy_weight=10.0, force_weight=1.0, max_shapes=3, max_train=args.max_train,
                         max_test=args.max_test,
                         batch_size=16)
    return run_streamline(ns, log=log)


def lammps_single_point(model_file: Path, atoms, elements):
    from ase.io import write

    from facet._lammps import new_lammps

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "s.data"
        write(data, atoms, format="lammps-data", specorder=elements, atom_style="atomic", masses=True)
        lmp = new_lammps()
        try:
            lmp.commands_string(f"""
                units metal
                atom_style atomic
                atom_modify map yes
                boundary p p p
                read_data {data}
                pair_style facet {model_file}
                pair_coeff * * {' '.join(elements)}
                run 0
            """)
            n = lmp.extract_global("nlocal")
            ids = np.array(lmp.numpy.extract_atom("id")[:n])
            forces = np.array(lmp.numpy.extract_atom("f")[:n])[np.argsort(ids)]
            energy = lmp.get_thermo("pe")
        finally:
            lmp.close()
    return {"energy": energy, "forces": forces}


def stage_export(config, params, s_config, s_params, out: Path) -> dict:
    from facet.calculator import FacetCalculator
    from facet_sevennet import export as sx

    log("export: model files through facet.export, run in ASE and LAMMPS")
    rows = []
    big = port_structures()["Si diamond 64 atoms, rattled"]
    quartz = port_structures()["alpha-quartz SiO2, rattled"]
    for label, cfg, prm in (("SevenNet-0 (port)", config, params),
                            ("SevenNet-Streamlined, fine-tuned", s_config, s_params)):
        for dtype in ("float32", "float64"):
            path = out / f"{'sevennet0' if not cfg.streamlined else 'streamlined'}_{dtype}.hlo"
            header = sx.export_model(cfg, prm, path, dtype=dtype)
            file_calc = FacetCalculator(str(path))
            inproc = sx.calculator(cfg, prm, dtype=dtype)
            row = {"model": label, "dtype": dtype, "bytes": path.stat().st_size, "cutoff": header["cutoff"],
                   "parameter_count": header["parameter_count"]}
            for name, atoms, elements in (("Si64", big, ["Si"]), ("quartz", quartz, ["Si", "O"])):
                ref = evaluate_calc(inproc, atoms)
                row[f"ase_{name}"] = max(rel_errors(evaluate_calc(file_calc, atoms), ref).values())
                try:
                    lmp = lammps_single_point(path, atoms, elements)
                    row[f"lammps_{name}"] = max(rel_errors(lmp, {k: ref[k] for k in ("energy", "forces")}).values())
                except (FileNotFoundError, ImportError) as e:
                    row[f"lammps_{name}"] = None
                    row["lammps_error"] = str(e)
            row["ase_time_si64"] = timed(file_calc, big)
            rows.append(row)
            log(f"  {label} {dtype}: ASE {row['ase_Si64']:.1e}/{row['ase_quartz']:.1e}, LAMMPS "
                f"{row['lammps_Si64']}/{row['lammps_quartz']}")
    return {"rows": rows}


# ----------------------------------------------------------------------------- plots


def plot_filters(config, params, fits, fit_min, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facet_sevennet import streamline as sl

    d = np.linspace(0.5, config.cutoff, 600)
    fit = sl.fit_filters(config, params, fit_min)
    x = sl.edge_basis(config, params, d)
    fig, axes = plt.subplots(2, (config.num_layers + 2) // 2, figsize=(13, 7))
    axes = axes.ravel()
    for t in range(config.num_layers):
        ax = axes[t]
        target = sl.radial_filter(config, params, t, d)
        approx = x @ fit.coefficients[t]
        top = np.argsort(-target[d >= fit_min].std(axis=0))[:4]
        for j, c in enumerate(top):
            ax.plot(d, target[:, c], color=f"C{j}", lw=1.6)
            ax.plot(d, approx[:, c], color=f"C{j}", lw=1.0, ls="--")
        ax.axvspan(0.5, fit_min, color="0.9")
        ax.set_title(f"layer {t}: R$^2$ = {fit.r2[t]:.4f}")
        ax.set_xlabel("d (Å)")
        ax.set_ylim(*np.percentile(target[d >= fit_min][:, top], [0, 100]) * 1.3)
    for i in range(0, len(axes), len(axes) // 2):
        axes[i].set_ylabel("filter weight (4 largest-variance outputs)")
    ax = axes[config.num_layers]
    centres = 0.5 * (np.array(fits["edge_bins"][1:]) + np.array(fits["edge_bins"][:-1]))
    ax.bar(centres, fits["edge_hist"], width=centres[1] - centres[0], color="0.5")
    ax.set_title("Si training edges")
    ax.set_xlabel("d (Å)")
    fig.suptitle(f"SevenNet-0 radial MLPs (solid) and their fits u(d) B(d)·A on {fit_min}-{config.cutoff} Å "
                 f"(dashed); grey band: outside the fit range")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_p(scaling_npz: Path, p_result: dict, png: Path, local: dict | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.load(scaling_npz)
    k = z["k"]
    layers = len(p_result["layers"])
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    fig, axes = plt.subplots(2, (layers + 2) // 2, figsize=(13, 7.5))
    axes = axes.ravel()
    keep = k >= p_result["min_k"]
    for t in range(layers):
        ax = axes[t]
        m = z["scalar"][:, t]
        fitt = p_result["layers"][t]["scalar"]
        ax.scatter(k[keep], m[keep], s=2, alpha=0.15, color="C0", rasterized=True)
        if local is not None:
            ax.plot(np.exp(local["log_k"][t]), np.exp(local["log_m"][t]), "o-", color="C2", ms=3, lw=1,
                    label="binned means")
        kk = np.linspace(k[keep].min(), k[keep].max(), 50)
        ax.plot(kk, np.exp(fitt["intercept"]) * kk ** fitt["p"], color="k", label=f"fit p = {fitt['p']:.2f}")
        mid = np.exp(np.mean(np.log(k[keep])))
        level = np.exp(fitt["intercept"]) * mid ** fitt["p"]
        for p, style in ((0.5, ":"), (1.0, "--")):
            ax.plot(kk, level * (kk / mid) ** p, color="C3", ls=style, label=f"k^{p:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator([5, 10, 20, 40, 60]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"layer {t}")
        ax.set_xlabel("neighbours k (< 5 Å)")
        ax.legend(fontsize=7)
    for i in range(0, len(axes), len(axes) // 2):
        axes[i].set_ylabel("|message sum|, RMS over 0e channels")
    ax = axes[layers]
    if local is not None:
        for t in range(layers):
            x = np.exp(0.5 * (np.array(local["log_k"][t][1:]) + np.array(local["log_k"][t][:-1])))
            ax.plot(x, local["slopes"][t], "o-", ms=3, color=f"C{t}", label=f"layer {t}")
    for q, style in ((0.5, ":"), (0.7, "-."), (1.0, "--")):
        ax.axhline(q, color="0.5", ls=style, lw=0.8)
    ax.axhline(p_result["pooled"]["p"], color="k", lw=1.2, label=f"pooled fit {p_result['pooled']['p']:.2f}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([10, 20, 40]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("neighbours k (< 5 Å)")
    ax.set_ylabel("local exponent d log|m| / d log k")
    ax.set_title("local exponent between bins")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_finetune(summary: dict, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, color in (("streamlined", "C0"), ("sevennet0", "C1")):
        f = summary.get(f"finetune_{name}")
        if not f:
            continue
        h = np.array(f["history"])
        w = max(1, len(h) // 5)
        smooth = np.convolve(h[:, 2], np.ones(w) / w, mode="valid")
        ax.plot(h[w - 1:, 1], smooth, color=color,
                label={"streamlined": "SevenNet-Streamlined", "sevennet0": "SevenNet-0"}[name])
    ax.set_yscale("log")
    ax.set_xlabel("training time (s, compilations excluded)")
    ax.set_ylabel("training loss (running mean over 1/5 of the steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def fmt(x, spec=".1e"):
    return "n/a" if x is None else format(x, spec)


def write_report(ctx: dict) -> str:
    port, fits, p, st, ex = ctx["port"], ctx["fits"], ctx["p"], ctx["streamline"], ctx["export"]
    env = ctx["env"]
    L = []
    L.append("# SevenNet-0 in JAX and SevenNet-Streamlined")
    L.append("")
    L.append(f"Generated by `python benchmarks/sevennet_report.py` (peer environment) on {env['date']}: "
             f"{env['machine']}, {env['cpus']} CPUs shared with other jobs (load average {env['load']}), "
             f"one thread; torch {env['torch']}, sevenn {env['sevenn']}, jax {env['jax']}, e3nn-jax {env['e3nn_jax']}. "
             "Do not edit by hand.")
    L.append("")
    L.append("The JAX port is `python/facet_sevennet/` (`model.py` the architecture, `convert.py` the "
             "checkpoint reader, the only torch-dependent part, `streamline.py`, `export.py`); its tests are "
             "`tests/peers/test_sevennet.py` (`make test-peers`).")
    L.append("")

    # -- port
    L.append("## 1. The port reproduces sevenn")
    L.append("")
    L.append("SevenNet-0 (11Jul2024 checkpoint shipped in the sevenn wheel) read into the JAX model and run "
             "through Facet's runtime (`ModelRunner`, ASE `FacetCalculator`, our neighbour list) against "
             "sevenn's own ASE calculator (torch, float32). Relative errors: energy |ΔE|/|E|, forces "
             f"max|ΔF| / max(max|F|, {FORCE_FLOOR} eV/Å), stress max|Δσ| / max(max|σ|, {STRESS_FLOOR} eV/Å³) "
             "(periodic cells only; the floors matter only for cells whose forces or stress vanish by "
             "symmetry). The Si test-split structures are drawn at random.")
    L.append("")
    L.append("| structure | atoms | E (eV) | max abs F (eV/Å) | float64 port: energy | forces | stress "
             "| max abs ΔF (eV/Å) | float32 port: energy | forces | stress |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in port["rows"]:
        a, b = r["float64"], r["float32"]
        L.append(f"| {r['name']} | {r['atoms']} | {r['energy']:.4f} | {r['max_force']:.2g} | {fmt(a['energy'])} | "
                 f"{fmt(a['forces'])} | {fmt(a.get('stress'))} | {r['abs_force_error']:.1e} | {fmt(b['energy'])} | "
                 f"{fmt(b['forces'])} | {fmt(b.get('stress'))} |")
    worst64 = max(max(r["float64"].values()) for r in port["rows"])
    worst32 = max(max(r["float32"].values()) for r in port["rows"])
    L.append("")
    L.append(f"Largest relative error over all structures and quantities: **{worst64:.1e}** (float64 port), "
             f"**{worst32:.1e}** (float32 port); the issue's bound is 1e-5. The float64 port's differences are "
             "sevenn's own float32 rounding. `tests/peers/test_sevennet.py` also compares the node features after "
             "the embedding and after each of the 5 layers with the torch modules run one by one.")
    L.append("")
    t = port["timing_64_atoms"]
    L.append("Time per energy+forces+stress call, 64-atom Si (median of 5, one thread, shared machine): "
             + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in t.items()) + ".")
    L.append("")
    d = ctx["details"]
    L.append("Details that matter for an exact port (read from the sevenn 0.13 and e3nn 0.6 sources and the "
             "checkpoint): "
             f"SevenNet-0 is an SO(3) model (`is_parity: {d['is_parity']}`: irreps 0e/1e/2e, Y_1 labelled even); "
             f"the self-connection is `{d['self_connection_type']}` (a linear map of the layer input to the gate "
             "input, not the one-hot tensor product); messages are divided by a fixed "
             f"{d['denominator']:.4f} (√ of the config's avg_num_neigh {d['avg_num_neigh']:.2f}), and the XPLOR "
             f"envelope ({d['cutoff_on']:g}-{d['cutoff']:g} Å) multiplies the radial MLP's input, not its output; "
             f"e3nn's normalize2mom constant of SiLU is torch's Monte-Carlo estimate {d['silu_torch']:.7f} (the "
             f"exact integral is {d['silu_exact']:.7f}), so the converter takes it from torch; the checkpoint "
             f"(sevenn {d['version']}) stores the radial MLP's output columns in path-creation order, and "
             f"{d['flipped']} of its {d['w3j']} saved Wigner-3j tensors ({d['flipped_paths']}) have the opposite "
             "sign of the current convention, which the converter folds into those columns.")
    L.append("")

    # -- parameters
    L.append("## 2. Streamlining: linear radial filters, collapsed readout")
    L.append("")
    s = st
    L.append(f"* Each layer's radial MLP R_t(d) = MLP(u(d) B(d)) (8 → 64 → 64 → paths, SiLU, no bias) is "
             f"replaced by u(d) B(d) · A_t, A_t an 8 × paths matrix fitted by least squares on a uniform grid "
             f"of {s['fit_points']} distances in [{s['fit_range'][0]:.1f}, {s['fit_range'][1]:.1f}] Å "
             f"(the lower end: the shortest Si training edge, {s['shortest_train_edge']:.2f} Å, rounded down). "
             "B: SevenNet-0's 8 Bessel functions with their trained frequencies, u: its XPLOR envelope.")
    L.append("* The readout's two bias-free linear maps (128 → 64 → 1) become one 128-vector (exact).")
    L.append(f"* Messages are divided by k(r_max)^p instead of 35.99: k(r) is the average neighbour count of "
             f"the Si training split (k(5 Å) = {s['k_at_cutoff']:.2f}), p = {s['degree_exponent']:g} "
             f"(section 3), r_max trainable in (0, 5.25) Å starting at 5 Å, the envelope's switching radius "
             "scaling with it; k(5 Å)^p / 35.99 is folded into A_t, so before fine-tuning the model differs "
             "from SevenNet-0 only by the filter fits.")
    L.append("")
    L.append("R² = 1 − Σ(R − fit)² / Σ(R − column mean)², over all outputs of a layer (pooled: sums over "
             "layers), on the uniform grid and, second row of each range, at the distances of 20,000 "
             "random Si training edges:")
    L.append("")
    L.append("| fit range (Å) | evaluated on | " + " | ".join(f"layer {t}" for t in range(len(fits['rows'][0]['r2'])))
             + " | pooled |")
    L.append("|---|---|" + "---:|" * (len(fits["rows"][0]["r2"]) + 1))
    for r in fits["rows"]:
        mark = " (used)" if abs(r["r_min"] - s["fit_range"][0]) < 1e-9 else ""
        L.append(f"| {r['r_min']:.1f}-5.0{mark} | grid | " + " | ".join(f"{v:.4f}" for v in r["r2"])
                 + f" | {r['pooled']:.4f} |")
        L.append("| | Si edges | " + " | ".join(f"{v:.4f}" for v in r["r2_edges"]) + f" | {r['pooled_edges']:.4f} |")
    L.append("")
    L.append("![radial filters](figures/sevennet_filters.png)")
    L.append("")
    L.append(f"Below the fit range the fitted filters leave the MLPs quickly (grey band): the streamlined model is "
             f"fitted for the Si data and is not universal for bonds shorter than {s['fit_range'][0]:.1f} Å "
             "(Si-O 1.6 Å, C-H 1.1 Å); for those, streamline with a lower `--fit-min`, at the cost in R² the table "
             "shows.")
    L.append("")
    L.append("Parameter counts (trainable weights; SevenNet-0's 89 per-species energy shifts and 89 scales are "
             "fixed in the checkpoint and listed apart):")
    L.append("")
    L.append("| | SevenNet-0 | SevenNet-Streamlined |")
    L.append("|---|---:|---:|")
    for name, a, b in ctx["param_rows"]:
        L.append(f"| {name} | {a:,} | {b:,} |")
    L.append(f"| **total** | **{s['parameters_before']:,}** | **{s['parameters_after']:,}** |")
    L.append(f"| fixed shifts and scales | {s['fixed_parameters']} | {s['fixed_parameters']} |")
    L.append("")
    diff = s["parameters_before"] - s["parameters_after"]
    L.append(f"The paper quotes 842,748 → 616,253, a reduction of {842748 - 616253:,}; ours is {diff:,} "
             f"({diff + 1:,} weights removed, 1 added: r_max){' — the same' if diff == 842748 - 616253 else ''}. "
             f"The totals differ by a constant {842748 - s['parameters_before']}: the paper counts "
             f"{842748 - s['parameters_before']} entries that are not trainable weights of the checkpoint (we "
             f"could not pin down which; the fixed shifts and scales plus the 5 divisors make "
             f"{s['fixed_parameters'] + 5}).")
    L.append("")

    # -- p
    L.append("## 3. The message-sum scaling exponent p")
    L.append("")
    L.append(f"Method. SevenNet-0 divides every message sum by the same 35.99, whatever an atom's neighbour "
             f"count k. We run it on {p['structures']} structures of the pyxtal Si set (all splits; densities "
             f"from 8 to 77 Å³/atom, so k at 5 Å spans "
             f"{p['pooled']['k_range'][0]:.0f}-{p['pooled']['k_range'][1]:.0f}) "
             "and record, per atom and layer, the raw sum Σ_e m_e before the divisor, and fit "
             "log|Σ m| = a_t + p log k by least squares (atoms with k ≥ "
             f"{p['min_k']:g}). The exponent p for which Σ m / k^p no longer depends on k is the "
             "normalisation the trained model's messages call for: p = 0.5 if messages add like random "
             "signs, 1 if they add coherently. |Σ m| is the RMS over the scalar (0e) channels: the l > 0 "
             "sums cancel by symmetry in symmetric environments, so their size reflects site symmetry rather "
             "than k (the all-channel numbers are listed too). 95 % intervals: bootstrap over structures. "
             "The pooled fit uses one slope for all layers with a separate intercept per layer.")
    L.append("")
    L.append("| layer | p (0e channels) | 95 % | p (all channels) | p of Σm / rms message (0e) |")
    L.append("|---|---:|---|---:|---:|")
    for t, lay in enumerate(p["layers"]):
        rel = lay.get("scalar_relative")
        L.append(f"| {t} | {lay['scalar']['p']:.3f} | {lay['scalar']['ci95'][0]:.2f}-{lay['scalar']['ci95'][1]:.2f} | "
                 f"{lay['total']['p']:.3f} | {fmt(rel['p'] if rel else None, '.3f')} |")
    ci = p["pooled"]["ci95"]
    L.append(f"| **pooled** | **{p['pooled']['p']:.3f}** | {ci[0]:.2f}-{ci[1]:.2f} | | |")
    L.append("")
    L.append("The last column divides the sum by the RMS size of one message, sqrt(Σ_e |m_e|² / k), which "
             "removes the change of the individual messages with density (shorter bonds, bigger filters, "
             "different upstream features) and measures only how coherently they add.")
    L.append("")
    L.append("How much |Σ m| / k^p still grows with k for the three candidate exponents (pooled over layers; "
             "remaining log-log slope, and the ratio of its mean over the densest and the sparsest quarter "
             "of atoms):")
    L.append("")
    L.append("| p | remaining slope | dense / sparse |")
    L.append("|---:|---:|---:|")
    for row in p["trend"]:
        L.append(f"| {row['p']:g} | {row['residual_slope']:+.3f} | {row['dense_over_sparse']:.3f} |")
    L.append("")
    L.append("![p estimate](figures/sevennet_p.png)")
    L.append("")
    L.append(p["verdict"])
    L.append("")
    L.append("Robustness (pooled over layers with per-layer intercepts, and layer 0 alone, whose inputs are "
             "the species embeddings and so do not themselves depend on density; 95 % bootstrap over structures):")
    L.append("")
    L.append("| variant | points per layer | p pooled | 95 % | p layer 0 | 95 % |")
    L.append("|---|---:|---:|---|---:|---|")
    for r in ctx["p_robust"]:
        L.append(f"| {r['label']} | {r['n']:,} | {r['pooled']:.3f} | {r['pooled_ci'][0]:.2f}-{r['pooled_ci'][1]:.2f} | "
                 f"{r['layer0']:.3f} | {r['layer0_ci'][0]:.2f}-{r['layer0_ci'][1]:.2f} |")
    L.append("")
    ls = ctx["p_local"]
    L.append("A single power law describes the data poorly: the local exponent d log|Σ m| / d log k between "
             "neighbouring bins of k (mean log k and mean log |Σ m| per bin; atoms per bin in brackets) rises "
             "with k in every layer:")
    L.append("")
    mids = [f"{a}-{b}→{c}-{d}" for (a, b), (c, d) in zip(ls["bins"], ls["bins"][1:])]
    L.append("| layer | " + " | ".join(mids) + " |")
    L.append("|---|" + "---:|" * len(mids))
    for t, row in enumerate(ls["slopes"]):
        L.append(f"| {t} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    L.append("| atoms | " + " | ".join(f"({a:,}→{b:,})" for a, b in zip(ls["counts"], ls["counts"][1:])) + " |")
    L.append("")

    # -- fine-tuning
    L.append("## 4. Energies and forces on the pyxtal Si test split, before and after fine-tuning")
    L.append("")
    ft = s.get("finetune_streamlined", {})
    fo = s.get("finetune_sevennet0", {})
    L.append(f"Test split: {s['test_structures']} structures; fine-tuning on the training split "
             f"({s['train_structures']} structures) with optax Adam, learning rate {ft.get('learning_rate', 0):g} "
             "decaying linearly to 0 over the budget, batches of "
             f"{ft.get('batch_size', 0)} structures, loss 10·MSE(E/atom) + MSE(F), float32, one CPU thread. "
             f"Budget: {ft.get('train_seconds', 0):.0f} s of training steps per model "
             f"(compilation excluded: {ft.get('compile_seconds', 0):.0f} s): {ft.get('steps', 0)} steps, "
             f"{ft.get('epochs', 0):.2f} epochs for the streamlined model, {fo.get('steps', 0)} steps "
             f"({fo.get('epochs', 0):.2f} epochs) for SevenNet-0 in the same time. All parameters train, "
             "including the per-species energy shift (only Si's moves).")
    L.append("")
    L.append("| model | energy MAE (meV/atom) | energy RMSE | force MAE (meV/Å) | force RMSE |")
    L.append("|---|---:|---:|---:|---:|")
    names = {"sevennet0": "SevenNet-0", "streamlined": "SevenNet-Streamlined, before fine-tuning",
             "streamlined_finetuned": "SevenNet-Streamlined, fine-tuned",
             "sevennet0_finetuned": "SevenNet-0, fine-tuned (same budget)"}
    for key in ("sevennet0", "streamlined", "streamlined_finetuned", "sevennet0_finetuned"):
        if key in s["test"]:
            m = s["test"][key]
            L.append(f"| {names[key]} | {1000 * m['energy_mae']:.1f} | {1000 * m['energy_rmse']:.1f} | "
                     f"{1000 * m['force_mae']:.0f} | {1000 * m['force_rmse']:.0f} |")
    c = s["change_streamlined_vs_sevennet0"]
    L.append("")
    L.append(f"Streamlining alone (before fine-tuning) changes the test predictions by {1000 * c['energy_mad']:.1f} "
             f"meV/atom (mean absolute; max {1000 * c['energy_max']:.0f}) and {1000 * c['force_mad']:.0f} meV/Å "
             f"(max {1000 * c['force_max']:.0f}; 99th percentile {1000 * ctx['force_change_p99']:.0f}; the largest "
             f"DFT force component in the test split is {ctx['max_test_force']:.1f} eV/Å). Trained r_max after "
             f"fine-tuning: {s.get('r_max_after_finetune', 5.0):.4f} Å, which changes the divisor k(r_max)^p by "
             f"{100 * ctx['divisor_change']:+.3f} %: within this budget the choice of p has no visible effect "
             "(at fixed r_max, k(r_max)^p is a constant folded into the filters).")
    L.append("")
    L.append("![fine-tuning](figures/sevennet_finetune.png)")
    L.append("")

    # -- export
    L.append("## 5. Export: the same model file, ASE and LAMMPS unchanged")
    L.append("")
    L.append("`facet_sevennet.export` builds the contract function (`facet.model.energy_and_edge_gradients` of "
             "the SevenNet module) and writes it with `facet.export.export_program` / `make_header` / "
             "`facet.modelfile.save_model_file`, so the file is an ordinary Facet model file "
             "(`export/README.md`): `FacetCalculator(path)` and `pair_style facet path` run it with no change. "
             "Relative differences (max over energy and forces) of the file in ASE and in LAMMPS (`run 0`, "
             "one rank) against the in-process model:")
    L.append("")
    L.append("| model | dtype | file size | cutoff (Å) | ASE Si64 | ASE quartz | LAMMPS Si64 | LAMMPS quartz "
             "| ASE call, Si64 |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in ex["rows"]:
        L.append(f"| {r['model']} | {r['dtype']} | {r['bytes'] / 1e6:.1f} MB | {r['cutoff']:.3f} | "
                 f"{fmt(r['ase_Si64'])} | "
                 f"{fmt(r['ase_quartz'])} | {fmt(r['lammps_Si64'])} | {fmt(r['lammps_quartz'])} | "
                 f"{1000 * r['ase_time_si64']:.0f} ms |")
    L.append("")
    L.append("Command line: `python -m facet_sevennet convert -o sevennet0.npz` (torch), "
             "`python -m facet_sevennet streamline --model sevennet0.npz --degree-exponent P`, "
             "`python -m facet_sevennet export MODEL.npz -o model.hlo`.")
    L.append("")
    return "\n".join(L)


def p_robustness(npz: Path, min_k: float) -> list[dict]:
    """The pooled and layer-0 exponents under other choices: a higher k floor (bulk-like
    atoms only), one point per structure (means of log k and log |m|), and |m| relative
    to the RMS message."""
    from facet_sevennet import streamline as sl

    z = np.load(npz)
    k, groups = z["k"], z["structure"]
    layers = z["scalar"].shape[1]

    def pooled(kind, floor, per_structure=False):
        xs, ys, gs = [], [], []
        for t in range(layers):
            m = z[kind][:, t]
            keep = (k >= floor) & (m > 0)
            lk, lm, g = np.log(k[keep]), np.log(m[keep]), groups[keep]
            if per_structure:
                uniq, inv = np.unique(g, return_inverse=True)
                cnt = np.bincount(inv)
                lk, lm, g = np.bincount(inv, lk) / cnt, np.bincount(inv, lm) / cnt, uniq
            lm = lm - np.polyval(np.polyfit(lk, lm, 1), lk.mean())  # per-layer intercept
            xs.append(lk)
            ys.append(lm)
            gs.append(g)
        x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
        fit = sl.fit_exponent(np.exp(x), np.exp(y), min_k=0.0, groups=g, n_boot=100)
        m0 = z[kind][:, 0]
        keep0 = (k >= floor) & (m0 > 0)
        if per_structure:
            uniq, inv = np.unique(groups[keep0], return_inverse=True)
            cnt = np.bincount(inv)
            k0, v0, g0 = (np.exp(np.bincount(inv, np.log(k[keep0])) / cnt),
                          np.exp(np.bincount(inv, np.log(m0[keep0])) / cnt), uniq)
        else:
            k0, v0, g0 = k[keep0], m0[keep0], groups[keep0]
        first = sl.fit_exponent(k0, v0, min_k=0.0, groups=g0, n_boot=100)
        return fit, first

    rows = []
    for label, kind, floor, per in (
        (f"per atom, k >= {min_k:g} (main estimate)", "scalar", min_k, False),
        ("per atom, k >= 15 (bulk-like atoms)", "scalar", 15.0, False),
        ("one point per structure (mean log k, mean log m)", "scalar", min_k, True),
        ("per atom, sum over rms message (coherence only)", "scalar_relative", min_k, False),
        ("per atom, all channels", "total", min_k, False),
    ):
        fit, first = pooled(kind, floor, per)
        rows.append({"label": label, "pooled": fit["p"], "pooled_ci": fit["ci95"], "layer0": first["p"],
                     "layer0_ci": first["ci95"], "n": fit["n_atoms"] // layers})
    return rows


K_BINS = (4, 8, 12, 16, 20, 24, 28, 32, 36, 42, 50, 64)


def local_slopes(npz: Path) -> dict:
    """Binned means of log k and log |m| (scalar channels) per layer, and the slopes between
    neighbouring bins: the local exponent d log|m| / d log k."""
    z = np.load(npz)
    k = z["k"]
    idx = np.digitize(k, K_BINS)
    bins = [i for i in range(1, len(K_BINS)) if (idx == i).sum() >= 50]
    out = {"bins": [[K_BINS[i - 1], K_BINS[i]] for i in bins], "counts": [int((idx == i).sum()) for i in bins],
           "log_k": [], "log_m": [], "slopes": []}
    for t in range(z["scalar"].shape[1]):
        m = z["scalar"][:, t]
        x = np.array([np.log(k[idx == i]).mean() for i in bins])
        y = np.array([np.log(m[idx == i]).mean() for i in bins])
        out["log_k"].append(x.tolist())
        out["log_m"].append(y.tolist())
        out["slopes"].append((np.diff(y) / np.diff(x)).tolist())
    return out


def verdict(p: dict, robust: list[dict]) -> str:
    pooled = p["pooled"]
    best = min(p["trend"], key=lambda r: abs(r["residual_slope"]))
    lo, hi = pooled["ci95"]
    inside = [row["p"] for row in p["trend"] if lo <= row["p"] <= hi]
    per_layer = [lay["scalar"]["p"] for lay in p["layers"]]
    text = (f"Result of the main estimate: pooled p = {pooled['p']:.2f} (95 % {lo:.2f}-{hi:.2f}); per layer "
            + ", ".join(f"{v:.2f}" for v in per_layer)
            + f". Of the three candidates, p = {best['p']:g} leaves the smallest trend with k")
    text += (f"; the interval contains {', '.join(f'{v:g}' for v in inside)}." if inside
             else "; none of 0.5, 0.7, 1 lies inside the interval.")
    values = [r["pooled"] for r in robust]
    closest = {}
    for r in robust:
        c = min((0.5, 0.7, 1.0), key=lambda q: abs(q - r["pooled"]))
        closest.setdefault(c, []).append(r["label"].split(" (")[0])
    text += (f" But the number depends on the choice of atoms and of what is measured (robustness table "
             f"below: pooled p from {min(values):.2f} to {max(values):.2f}); the closest candidate is "
             + "; ".join(f"{c:g} for " + ", ".join(f"[{x}]" for x in v) for c, v in sorted(closest.items()))
             + ". We do not find a single exponent that describes SevenNet-0's message sums.")
    return text


def port_details(config, info) -> dict:
    """Facts about the checkpoint quoted in the report, computed rather than typed."""
    import torch

    from facet_sevennet.convert import sevennet0_checkpoint
    from facet_sevennet.model import clebsch_gordan

    ck = torch.load(sevennet0_checkpoint(), weights_only=False, map_location="cpu")
    flipped, total, names, layers = 0, 0, set(), set()
    for key, value in ck["model_state_dict"].items():
        if "_w3j_" in key:
            l1, l2, l3 = map(int, key.split("_w3j_")[1].split("_"))
            total += 1
            if np.allclose(value.double().numpy(), -clebsch_gordan(l1, l2, l3), atol=1e-6):
                flipped += 1
                names.add(f"{l1}{l2}{l3}")
                layers.add(int(key.split("_")[0]))
    z, w = np.polynomial.hermite_e.hermegauss(200)
    silu = z / (1 + np.exp(-z))
    exact = float((np.sum(w * silu**2) / np.sqrt(2 * np.pi)) ** -0.5)
    cfg = ck["config"]
    return {"is_parity": cfg["is_parity"], "self_connection_type": cfg["self_connection_type"],
            "denominator": config.denominators[0], "avg_num_neigh": info["avg_num_neigh"][0],
            "cutoff_on": config.cutoff_on, "cutoff": config.cutoff, "silu_torch": config.act_constant["silu"],
            "silu_exact": exact, "version": cfg["version"], "flipped": flipped, "w3j": total,
            "flipped_paths": "l1 l2 l3 = " + ", ".join(sorted(names)) + " in layers "
                             + ", ".join(str(t) for t in sorted(layers))}


def test_force_stats(predictions: Path, data: Path) -> dict:
    from ase.io import read

    z = np.load(predictions)
    change = np.abs(z["streamlined_forces"] - z["sevennet0_forces"])
    forces = np.concatenate([a.get_forces() for a in read(data / "test.extxyz", ":")])
    return {"force_change_p99": float(np.percentile(change, 99)), "max_test_force": float(np.abs(forces).max())}


def param_rows(config, params, s_params):
    from facet_sevennet.model import FIXED_PARAMETERS

    def count(p, pred):
        return int(sum(np.prod(np.shape(v)) for k, v in p["params"].items() if pred(k) and k not in FIXED_PARAMETERS))

    rows = [("embedding (89 one-hot → 128)", lambda k: k == "embedding"),
            ("Bessel frequencies", lambda k: k == "bessel_frequencies"),
            ("self-connection, linear 1, linear 2 (5 layers)",
             lambda k: any(s in k for s in ("_self_connection_", "_linear_1_", "_linear_2_"))),
            ("radial filters (5 layers)", lambda k: "_radial_" in k or k.endswith("_filter")),
            ("readout", lambda k: k.startswith("readout")),
            ("trainable r_max", lambda k: k == "r_max_raw")]
    return [(name, count(params, pred), count(s_params, pred)) for name, pred in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "sevennet")
    ap.add_argument("--data", type=Path, default=REPO / "benchmarks" / "out" / "si")
    ap.add_argument("--finetune-seconds", type=float, default=300.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--p-structures", type=int, default=1500)
    ap.add_argument("--min-k", type=float, default=4.0)
    ap.add_argument("--n-si-port", type=int, default=6, help="Si test structures in the port table")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite SEVENNET.md and the figures from the results of a previous full run in --out")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: tiny data subsets and budgets (the report says so at the top)")
    args = ap.parse_args(argv)
    args.max_train = args.max_test = None
    if args.quick:
        args.finetune_seconds, args.p_structures, args.n_si_port = 10.0, 64, 1
        args.max_train, args.max_test = 128, 32
    if not (args.data / "train.extxyz").exists():
        print(f"error: {args.data}/train.extxyz not found: run `.venv/bin/python benchmarks/si_data.py`",
              file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    FIGURES.mkdir(parents=True, exist_ok=True)

    import e3nn_jax
    import jax
    import sevenn
    import torch

    import facet_sevennet as sevennet

    torch.set_num_threads(1)
    if args.render_only:
        config, params, info = sevennet.load(out / "sevennet0.npz")
    else:
        config, params, info = sevennet.read_checkpoint()
        sevennet.save(out / "sevennet0.npz", config, params, info)
    previous = json.loads((out / "report.json").read_text()) if args.render_only else {}

    p_result = previous["p"] if args.render_only else stage_p(args, out)
    p_npz = (out / "p_estimate.json").with_suffix(".npz")
    p_robust = p_robustness(p_npz, args.min_k)
    p_result["verdict"] = verdict(p_result, p_robust)
    (out / "p_estimate.json").write_text(json.dumps(p_result, indent=1))
    p_used = round(p_result["pooled"]["p"], 2)

    if args.render_only:
        st = json.loads((out / "streamlined" / "streamline.json").read_text())
        fits, port, exported = previous["fits"], previous["port"], previous["export"]
    else:
        st = stage_streamline(args, out, p_used)
        fits = stage_fits(config, params, args.data, st["fit_range"][0])
    s_config, s_params, _ = sevennet.load(out / "streamlined" / "streamlined_finetuned.npz")
    s_init = sevennet.load(out / "streamlined" / "streamlined.npz")[1]
    if not args.render_only:
        port = stage_port(config, params, info, args.data, args.n_si_port)
        exported = stage_export(config, params, s_config, s_params, out)

    plot_filters(config, params, fits, st["fit_range"][0], out / "sevennet_filters.png")
    plot_p((out / "p_estimate.json").with_suffix(".npz"), p_result, out / "sevennet_p.png",
           local_slopes((out / "p_estimate.json").with_suffix(".npz")))
    plot_finetune(st, out / "sevennet_finetune.png")
    for name in ("sevennet_filters.png", "sevennet_p.png", "sevennet_finetune.png"):
        shutil.copy(out / name, FIGURES / name)

    ctx_details = previous["details"] if args.render_only else port_details(config, info)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    env = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
           "load": " ".join(f"{x:.1f}" for x in load), "torch": torch.__version__,
           "sevenn": sevenn.__version__, "jax": jax.__version__, "e3nn_jax": e3nn_jax.__version__}
    if args.render_only:
        env = previous["env"]  # the environment of the run that produced the numbers
    ctx = {
        "port": port, "fits": fits, "p": p_result, "streamline": st, "export": exported,
        "param_rows": param_rows(config, params, s_init), "details": ctx_details,
        "p_robust": p_robust,
        "p_local": local_slopes((out / "p_estimate.json").with_suffix(".npz")),
        **test_force_stats(out / "streamlined" / "test_predictions.npz", args.data),
        "divisor_change": float(
            (np.interp(sevennet.cutoff(s_params, s_config), s_config.degree_radii, s_config.degree_values)
             / np.interp(s_config.cutoff, s_config.degree_radii, s_config.degree_values)) ** s_config.degree_exponent
            - 1.0),
        "env": env,
    }
    (out / "report.json").write_text(json.dumps({k: v for k, v in ctx.items() if k != "streamline"}, indent=1,
                                                default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    text = write_report(ctx)
    if args.quick:
        text = text.replace(
            "\n", "\n\n**QUICK SMOKE-TEST RUN (`--quick`): tiny subsets, numbers not meaningful.**\n", 1)
    REPORT.write_text(text)
    log(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
