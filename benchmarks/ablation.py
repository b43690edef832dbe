"""Training levers, one at a time: 10-minute Facet runs on the Si split, side by side.

    python benchmarks/ablation.py --variants baseline,throughput [--minutes 10]
    python benchmarks/ablation.py --report          # table and figure from the runs on disk

Each variant is `benchmarks/configs/facet-small-si.json` with the recipe before this
ablation (BEFORE) and then the `--set` overrides listed in VARIANTS, trained by
`python -m facet.train` exactly as `run.py`'s train
step does (same split, one core and one thread per run, two runs at a time, the
clock starting at launch so data loading and compilation count), validating every
minute. The report gives validation energy and force MAE at 2, 5 and 10 minutes
after launch (the last validation at or before that time, EMA weights), the
steady-state training rate (median structures/s over the logging windows) and
the run's totals, in `benchmarks/out/ablation/ablation.json`, in the section of
`benchmarks/RESULTS.md` between the ablation markers, and as
`benchmarks/figures/ablation.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (the peer benchmark's command builder and paths)

OUT = bench.OUT / "ablation"
RESULTS = HERE / "RESULTS.md"
FIGURE = HERE / "figures" / "ablation.png"
CHECKPOINTS_MINUTES = (2, 5, 10)
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"

# Every variant starts from the recipe before this ablation, spelled out so that changing
# the config files' defaults does not change a row: Prodigy (its warm-up now counted in
# steps: 100, about the 8 % of a 10-minute run it used to be), a 3-shape padding menu,
# trainable r_max on a 6 A graph, batch 8, MAE loss with weights 1 and 1.
BEFORE = ("optimizer=prodigy", "learning_rate=1.0", "warmup_steps=100", "warmup_start=0.0", "decay=linear",
          "weight_decay=0.0001", "batching=menu", "max_batch_shapes=3", "train_r_max=true", "batch_size=8",
          "loss=mae", "energy_weight=1.0", "force_weight=1.0", "statistics_learning_rate_factor=1.0",
          "final_stage_fraction=0.0", "model.layer_scale_init=0.0", "model.r_max_init=5.0", "model.graph_cutoff=6.0")
THROUGHPUT = ("batching=budget", "train_r_max=false")
ADAM = ("optimizer=adam", "learning_rate=0.005", "warmup_steps=100", "warmup_start=0.2", "decay=cosine",
        "weight_decay=0.0")
MUON = ("optimizer=muon", "learning_rate=0.01", "warmup_steps=100", "warmup_start=0.2", "decay=cosine",
        "weight_decay=0.001")
NARROW = bench.NARROW  # the peers' width (~90k parameters), as run.py trains it
MID = ("model.hidden_irreps=96x0e+48x1o+32x2e", "model.embedding_channels=96", "model.scalar_channels=96",
       "model.mixer_channels=48")
GRID12 = ("model.s2_res_beta=12", "model.s2_res_alpha=11")
GRID12_L2MAE = THROUGHPUT + MUON + GRID12 + ("loss=l2mae",)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "baseline": ("as before: Prodigy, 3-shape padding menu, trainable r_max, 6 Å graph", ()),
    "throughput": ("one budget-packed shape (1.1× the mean batch); r_max fixed at 5 Å, graph cut there",
                   THROUGHPUT),
    "adam": ("throughput + AdamW 5e-3, 100-step warm-up from 0.2×, cosine decay", THROUGHPUT + ADAM),
    "muon": ("throughput + Muon 0.01 (Nequix's recipe: 100-step warm-up from 0.2×, cosine)", THROUGHPUT + MUON),
    "muon-layerscale": ("muon + layer scales start at 0.1", THROUGHPUT + MUON + ("model.layer_scale_init=0.1",)),
    "muon-statistics": ("muon + statistics (Bessel frequencies, species shift/scale) by Adam at 0.1× the step size",
                        THROUGHPUT + MUON + ("statistics_learning_rate_factor=0.1",)),
    "muon-l2mae": ("muon + per-atom force-norm MAE loss (Nequix's)", THROUGHPUT + MUON + ("loss=l2mae",)),
    "muon-batch16": ("muon + batch 16", THROUGHPUT + MUON + ("batch_size=16",)),
    "muon-lr0.02": ("muon + step size 0.02", THROUGHPUT + MUON + ("learning_rate=0.02",)),
    "muon-rmax4.5": ("muon + r_max fixed at 4.5 Å", THROUGHPUT + MUON + ("model.r_max_init=4.5",)),
    "muon-rmax5.5": ("muon + r_max fixed at 5.5 Å", THROUGHPUT + MUON + ("model.r_max_init=5.5",)),
    "muon-final-stage": ("muon + energy weight 5 for the last 20 % of the run (MACE's second stage)",
                         THROUGHPUT + MUON + ("final_stage_fraction=0.2", "final_stage_energy_weight=5.0")),
    "muon-grid14": ("muon + the mixers' spherical grid 14×13 instead of 18×17 (182 points, not 306)",
                    THROUGHPUT + MUON + ("model.s2_res_beta=14", "model.s2_res_alpha=13")),
    "default": ("the default recipe: muon-grid14, with its warm-up and cosine decay applied (see the notes)",
                THROUGHPUT + MUON + ("model.s2_res_beta=14", "model.s2_res_alpha=13")),
    "grid12": ("default + the mixers' grid 12×11 (132 points; equivariance error 0.85 %, within the tested 1 %)",
               THROUGHPUT + MUON + GRID12),
    "grid12-l2mae": ("grid12 + per-atom force-norm MAE loss (Nequix's)", GRID12_L2MAE),
    "grid12-l2mae-seed1": ("grid12-l2mae with seed 1 (the run-to-run spread of one recipe)",
                           GRID12_L2MAE + ("seed=1",)),
    "grid12-l2mae-fw2": ("grid12-l2mae + force weight 2 (energy weight 1)",
                         GRID12_L2MAE + ("force_weight=2.0",)),
    "grid12-l2mae-narrow": ("grid12-l2mae at the peers' width (64x0e+32x1o+32x2e, ~90k parameters)",
                            GRID12_L2MAE + NARROW),
    "grid12-l2mae-mid": ("grid12-l2mae at a middle width (96x0e+48x1o+32x2e, 96 channels, mixer 48)",
                         GRID12_L2MAE + MID),
    "grid12-l2mae-narrow-seed1": ("grid12-l2mae-narrow with seed 1 (its run-to-run spread)",
                                  GRID12_L2MAE + ("seed=1",) + NARROW),
    "grid12-mae-narrow": ("grid12-l2mae-narrow with the component MAE loss instead",
                          THROUGHPUT + MUON + GRID12 + NARROW),
}
# The water runs (20 minutes, DeePMD water split, benchmarks/configs/facet-small-water.json
# as it stood in the last run.py run, then the row's overrides).
WATER_BEFORE = ("loss=mae", "warmup_steps=100", "statistics_learning_rate_factor=1.0",
                "model.s2_res_beta=14", "model.s2_res_alpha=13")
WATER_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "water-l2mae": ("per-atom force-norm MAE loss; warm-up 15 steps (0.1 epoch, Nequix's) instead of 100",
                    ("loss=l2mae", "warmup_steps=15")),
    "water-l2mae-statistics": ("water-l2mae + statistics (species shifts, scale, Bessel frequencies) at 0.1× "
                               "the step size", ("loss=l2mae", "warmup_steps=15",
                                                 "statistics_learning_rate_factor=0.1")),
    "water-energy4": ("water-l2mae-statistics + energy weight 4 (force weight 1) for the whole run",
                      ("loss=l2mae", "warmup_steps=15", "statistics_learning_rate_factor=0.1", "energy_weight=4.0")),
    "water-final-stage": ("water-l2mae-statistics + energy weight 5 for the last 25 % of the run (MACE's second "
                          "stage)", ("loss=l2mae", "warmup_steps=15", "statistics_learning_rate_factor=0.1",
                                     "final_stage_fraction=0.25", "final_stage_energy_weight=5.0")),
    "water-statistics-seed1": ("water-l2mae-statistics with seed 1 (the run-to-run spread)",
                               ("loss=l2mae", "warmup_steps=15", "statistics_learning_rate_factor=0.1", "seed=1")),
}
WATER_COMMON = ("eval_every_minutes=4.0", "checkpoint_every_minutes=100")

# The target: Nequix's validation errors after 20 minutes in the last full run.py run
# (energy meV/atom, forces meV/Å; benchmarks/RESULTS.md, "Training efficiency").
NEQUIX_20_MIN = (34.2, 56.2)

MACE_60_MIN = (28.7, 59.8)


def crossing(curve, target) -> str:
    """Minutes after launch of the first validation at or below each target (energy, forces)."""
    out = []
    for k, goal in ((1, target[0]), (2, target[1])):
        hit = next((point[0] for point in curve if point[k] <= goal), None)
        out.append("–" if hit is None else f"{hit:.1f}")
    return " / ".join(out)


# What a reader needs to compare the rows fairly.
NOTES = (
    "- **Every row but `default` ran with a bug, found after the runs, that left the schedule's factor at 1:** "
    "their step size was constant (Muon 0.01, AdamW 5e-3, Prodigy's own estimate) with no warm-up and no "
    "decay, although the overrides ask for them. `default` is muon-grid14 re-run with the schedule applied "
    "(the test that one Adam step moves each parameter by the scheduled step size now guards it).",
    "- The rows adam, muon, muon-l2mae and muon-batch16 ran before the first convolution was computed per "
    "sender species (the same function, tested to 1e-12, about 2–3 % more structures per second); the "
    "other rows include it.",
    "- Runs were made in pairs, one per core; muon-final-stage and muon-grid14 ran beside a longer Facet run, "
    "the others beside another row. The steady-state rate of a run alone on the machine is about 5–10 % "
    "higher (`benchmarks/profile_training.py`).",
    "- grid12 and grid12-l2mae ran as a pair on a later day: both ran at 44 structures/s, below `default`'s 49 "
    "although 12×11 is the cheaper grid (`benchmarks/s2_grid.py`: 134 against 204 ms per mixer and gradient), "
    "so the machine was slower that day; compare those two rows with each other, not with the rows above.",
    "- The width rows (grid12-l2mae-narrow, -mid, -narrow-seed1, grid12-mae-narrow) ran in pairs on "
    "2026-12-02, with the end-of-run species-shift refit, which the earlier rows did not have (it moves "
    "energies, not forces). Narrower models step faster (steady structures/s in the table) and so see "
    "more epochs in the same 10 minutes.",
    "- The baseline's warm-up is 100 optimiser steps; before this change it was 8 % of the run's wall time, "
    "about the same in a 10-minute run but partly spent compiling.",
)
COMMON = ("eval_every_minutes=1.0", "checkpoint_every_minutes=100")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--report", action="store_true", help="only write the report from the runs on disk")
    p.add_argument("--first-core", type=int, default=0, help="core of the first run of each pair")
    return p.parse_args(argv)


def train(names: list[str], minutes: float, first_core: int = 0) -> None:
    """Two at a time, one core each (cores first_core, first_core + 1)."""
    for k in range(0, len(names), 2):
        procs = []
        for core, name in enumerate(names[k:k + 2], start=first_core):
            out = OUT / name
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            if name in WATER_VARIANTS:
                water = os.path.relpath(bench.WATER / "all.extxyz", bench.ROOT)
                cmd = bench.facet_train_cmd(minutes, core, out, data=water, split="benchmarks/water/split.json",
                                            config="benchmarks/configs/facet-small-water.json")
                overrides = WATER_COMMON + WATER_BEFORE + WATER_VARIANTS[name][1]
            else:
                cmd = bench.facet_train_cmd(minutes, core, out)
                overrides = COMMON + BEFORE + VARIANTS[name][1]
            cmd += "".join(f" --set {shlex.quote(o)}" for o in overrides)
            (out / "command.txt").write_text(cmd + "\n")
            procs.append((name, bench.run(cmd, log_file=out / "train.log", background=True)))
        failed = [f"{name} (return code {rc})" for name, proc in procs if (rc := proc.wait()) != 0]
        if failed:
            bench.log(f"ablation: failed: {', '.join(failed)}; see their train.log")


def summarise(name: str, checkpoints=CHECKPOINTS_MINUTES) -> dict | None:
    metrics = OUT / name / "metrics.jsonl"
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    valid = [r for r in rows if "valid_energy_mae_mev_atom" in r]
    windows = [r["structures_per_s"] for r in rows if "structures_per_s" in r]
    summary = json.loads((OUT / name / "summary.json").read_text()) if (OUT / name / "summary.json").exists() else {}
    at = {}
    for minutes in checkpoints:
        before = [r for r in valid if r["wall_s"] <= 60 * minutes + 30]  # the last validation by then (+30 s grace)
        at[str(minutes)] = ({"energy": before[-1]["valid_energy_mae_mev_atom"],
                             "forces": before[-1]["valid_force_mae_mev_A"], "wall_s": before[-1]["wall_s"]}
                            if before else None)
    variants = WATER_VARIANTS if name in WATER_VARIANTS else VARIANTS
    return {
        "name": name, "description": variants.get(name, ("", ()))[0],
        "overrides": list(variants.get(name, ("", ()))[1]), "test": summary.get("test"),
        "at_minutes": at, "steady_structures_per_s": statistics.median(windows) if windows else None,
        "steps": summary.get("step"), "parameters": summary.get("num_params"),
        "epochs": valid[-1]["epoch"] if valid else None,
        "curve": [(r["wall_s"] / 60, r["valid_energy_mae_mev_atom"], r["valid_force_mae_mev_A"]) for r in valid],
    }


# The last run.py water run (benchmarks/RESULTS.md, "Second data set"): test errors after 20 minutes.
WATER_BEFORE_TEST = (1.95, 94.2)
WATER_NEQUIX_TEST = (0.69, 74.2)
WATER_CHECKPOINTS = (5, 10, 20)


def water_table(results: list[dict]) -> list[str]:
    if not results:
        return []
    fmt = lambda p: f"{p['energy']:.2f} / {p['forces']:.1f}" if p else "–"  # noqa: E731
    lines = ["### Water levers (20-minute runs)", "",
             "`python benchmarks/ablation.py --variants water-... --minutes 20`: the DeePMD water split, "
             "`benchmarks/configs/facet-small-water.json` as in the last run.py run (MAE loss, 100-step warm-up; "
             f"test {WATER_BEFORE_TEST[0]} meV/atom, {WATER_BEFORE_TEST[1]} meV/Å), then the row's overrides; "
             "two runs side by side, one core each, validation every 4 minutes. Nequix's 20-minute test errors "
             f"in that run: {WATER_NEQUIX_TEST[0]} meV/atom, {WATER_NEQUIX_TEST[1]} meV/Å. Energy / force MAE "
             "(meV/atom / meV/Å).", "",
             "| variant | what changes | validation 5 min | 10 min | 20 min | test (final) | steps |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        test = r.get("test") or {}
        test_text = (f"{test['energy_mae_mev_atom']:.2f} / {test['force_mae_mev_A']:.1f}" if test else "–")
        at = r["at_minutes"]
        lines.append(f"| {r['name']} | {r['description']} | {fmt(at['5'])} | {fmt(at['10'])} | {fmt(at['20'])} | "
                     f"{test_text} | {r['steps'] or 0} |")
    return lines + ["", "water-l2mae and water-l2mae-statistics ran as a pair; water-energy4 and water-final-stage "
                    "ran one after the other on one core (`--first-core 1`) while the other core built and tested "
                    "code, so their step counts (398, 430) are not comparable with the pair's. No water lever yet "
                    "reaches Nequix's test energy error: the final stage brings it from 1.10 to 0.95 meV/atom at "
                    "3.5 meV/Å more force error; an energy weight of 4 throughout costs 36 meV/Å.", ""]


def section(results: list[dict], written: str, water_results: list[dict] = ()) -> str:
    """The Markdown section of RESULTS.md (report.py renders it too, from ablation.json)."""
    fmt = lambda p: f"{p['energy']:.1f} / {p['forces']:.1f}" if p else "–"  # noqa: E731
    lines = [START, "", "## Training levers, one at a time (10-minute runs)", "",
             f"Written by `python benchmarks/ablation.py` ({written}). "
             "Each row is one 10-minute Facet run on the Si split (`benchmarks/configs/facet-small-si.json` with "
             "the recipe before this ablation, then the row's overrides; "
             "`benchmarks/out/ablation/NAME/command.txt`), one core and one thread, two runs "
             "side by side, the clock starting at launch. Targets: Nequix's and MACE's validation errors "
             "after 20 and 60 minutes in the last full run (34.2 / 56.2 and 28.7 / 59.8; – = not reached in "
             "the run). Validation energy / force MAE (meV/atom / meV/Å, EMA "
             "weights) at the last validation by 2, 5 and 10 minutes; steady-state rate is the median over the "
             "logging windows.", "",
             "| variant | what changes | parameters | 2 min | 5 min | 10 min | structures/s (steady) | epochs | "
             "Nequix's 20-min E / F reached at (min) | MACE's 60-min E / F reached at (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sps = f"{r['steady_structures_per_s']:.1f}" if r["steady_structures_per_s"] else "–"
        lines.append(f"| {r['name']} | {r['description']} | {r['parameters'] or 0:,} | {fmt(r['at_minutes']['2'])} | "
                     f"{fmt(r['at_minutes']['5'])} | {fmt(r['at_minutes']['10'])} | {sps} | {r['epochs'] or 0:.1f} | "
                     f"{crossing(r['curve'], NEQUIX_20_MIN)} | {crossing(r['curve'], MACE_60_MIN)} |")
    lines += ["", "![ablation](figures/ablation.png)", "", *NOTES, ""]
    lines += water_table(water_results)
    lines += profile_table()
    lines += grid_table()
    lines += [END]
    return "\n".join(lines)


def grid_table() -> list[str]:
    """benchmarks/s2_grid.py's measurements: the mixer grid's equivariance error against its cost."""
    path = bench.OUT / "s2_grid.json"
    if not path.exists():
        return []
    out = ["### The mixers' spherical grid", "",
           "`python benchmarks/s2_grid.py`: the mixer's equivariance error (random features and rotations; the test "
           "bounds it at 1 %), a small random Facet's energy (fraction of the per-atom spread) and force errors "
           "under rotations and inversion, and the time of one Facet-Small-width mixer with its gradient on "
           "512 atoms, one thread.", "",
           "| quadrature | grid | points | mixer error | energy error | force error | mixer + gradient (ms) |",
           "|---|---|---|---|---|---|---|"]
    for r in json.loads(path.read_text()):
        if "error" in r:
            continue
        out.append(f"| {r['quadrature']} | {r['res_beta']}×{r['res_alpha']} | {r['points']} | {r['mixer']:.2%} | "
                   f"{r['energy']:.0e} | {r['forces']:.0e} | {r['mixer_grad_ms_512_atoms']:.0f} |")
    return out + [""]


# Training-step profiles (benchmarks/profile_training.py): the recipe before, the default one, and the
# default at the peers' width (--set each of NARROW, --out benchmarks/out/profile_training_narrow.json).
PROFILES = (("before (Prodigy recipe: 3-shape menu, 6 Å graph)", "profile_training_before.json"),
            ("default recipe", "profile_training.json"),
            ("default recipe at the peers' width (90k)", "profile_training_narrow.json"))


def profile_table() -> list[str]:
    found = [(label, json.loads((bench.OUT / name).read_text())) for label, name in PROFILES
             if (bench.OUT / name).exists()]
    if not found:
        return []
    rows = [("padding: padded / real atoms, edges", lambda p: f"{p['padding']['atoms']:.2f}×, "
             f"{p['padding']['edges']:.2f}× ({len(p['padding']['shapes'])} shape(s))"),
            ("training graph", lambda p: f"{p['training_graph_cutoff_A']:g} Å, "
             f"{p['edges_per_atom_training_graph']:.1f} edges per atom"),
            ("compilation (s)", lambda p: ", ".join(f"{k}: {v:.0f}" for k, v in p["compile_s"].items())),
            ("step (ms): batch assembly / transfer / update", lambda p: f"{p['step_ms']['assemble']:.1f} / "
             f"{p['step_ms']['transfer']:.1f} / {p['step_ms']['update']:.0f}"),
            ("steady state", lambda p: f"{p['structures_per_s']:.1f} structures/s, "
             f"{p['ms_per_real_atom']:.2f} ms per real atom"),
            ("achieved FLOP/s (XLA cost analysis ÷ update time)", lambda p: (
                f"{p['achieved_flop_per_s'] / 1e9:.1f} GFLOP/s = "
                f"{p['achieved_flop_per_s'] / p['matmul_peak_flop_per_s']:.0%}"
                f" of this core's float32 matmul rate ({p['matmul_peak_flop_per_s'] / 1e9:.0f} GFLOP/s)"
                if p.get("achieved_flop_per_s") else "–")),
            ("a validation pass (first one compiles)", lambda p: f"{p['validation_pass_s']:.1f} s for "
             f"{p['validation_structures']} structures")]
    out = ["### Where a training step's time goes", "",
           "`python benchmarks/profile_training.py` (the real Trainer and loader on the Si training split, batch 8, "
           "one core, one thread; `--set` the recipe; the last column sets the four width overrides of "
           "`grid12-l2mae-narrow`; the last two columns were measured one after the other on 2026-12-02):", "",
           "| | " + " | ".join(label for label, _ in found) + " |", "|---|" + "---|" * len(found)]
    for name, fn in rows:
        out.append(f"| {name} | " + " | ".join(fn(p) for _, p in found) + " |")
    return out + [""]


def write_report() -> None:
    results = [r for r in (summarise(n) for n in VARIANTS) if r]
    water = [r for r in (summarise(n, WATER_CHECKPOINTS) for n in WATER_VARIANTS) if r]
    OUT.mkdir(parents=True, exist_ok=True)
    written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (OUT / "ablation.json").write_text(json.dumps({"written": written, "runs": results, "water": water}, indent=2))
    text, section_md = RESULTS.read_text(), section(results, written, water)
    if START in text and END in text:
        text = text[:text.index(START)] + section_md + text[text.index(END) + len(END):]
    else:
        marker = "## Speed per energy+forces+stress call"
        text = (text.replace(marker, section_md + "\n\n" + marker, 1) if marker in text
                else text + "\n" + section_md + "\n")
    RESULTS.write_text(text)
    plot(results)
    print(section_md)


def plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        if not r["curve"]:
            continue
        t, e, f = zip(*r["curve"])
        axes[0].semilogy(t, e, "o-", ms=3, label=r["name"])
        axes[1].semilogy(t, f, "o-", ms=3, label=r["name"])
    for ax, what, target in zip(axes, ("validation energy MAE (meV/atom)", "validation force MAE (meV/Å)"),
                                NEQUIX_20_MIN):
        ax.axhline(target, color="k", ls="--", lw=1, label="Nequix after 20 min (RESULTS.md, earlier run)")
        ax.set(xlabel="minutes since launch", ylabel=what)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Facet on the Si split: one lever at a time (one core each)")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS and n not in WATER_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join([*VARIANTS, *WATER_VARIANTS])}")
    if names and not args.report:
        train(names, args.minutes, args.first_core)
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
