"""Active learning with a committee: run MD, collect the frames it is unsure of, label them,
fine-tune, repeat.

    python -m facet.active --committee RUN --data train.extxyz --out active \\
        --temperature 4000 --oracle my_oracle.py:make_calculator --test hot.extxyz

RUN is a committee run directory (``python -m facet.train --ensemble N --out RUN``: its
members are RUN/member_K/checkpoints/last.ckpt). Iteration 0 evaluates the starting
committee. Each later iteration

1. runs Langevin MD (ASE) with the committee's model file, from structures of ``--start``
   (default: the training data), at ``--temperature``;
2. keeps the sampled frames whose largest per-atom force std passes ``--threshold``
   (default: set from the committee's own validation set), at least ``--min-separation``
   MD steps apart within a trajectory, the most uncertain first, at most ``--max-frames``;
   a trajectory stops when the std passes ``--halt`` (the model is lost there);
3. writes them to OUT/iter_K/candidates.extxyz for labelling;
4. with ``--oracle FILE.py:NAME`` (or ``module:NAME``; NAME() returns an ASE calculator),
   labels them into OUT/iter_K/labelled.extxyz; a frame the oracle fails on is reported
   in OUT/iter_K/oracle_failures.txt and skipped. Without an oracle the run stops there:
   label the candidates yourself into OUT/iter_K/labelled.extxyz and run it again;
5. fine-tunes every member from its last checkpoint on all frames labelled so far plus
   ``--replay`` of the original training structures (so that the model does not forget
   them), and exports the new committee, OUT/iter_K/committee.hlo.

With ``--test`` (labelled structures), every iteration reports the committee's energy and
force errors there, and how well its uncertainty ranks them (the Spearman correlation of
each structure's largest force std with its largest force error). OUT/active.jsonl holds one
line per iteration, OUT/report.md the table, OUT/active.png and OUT/calibration.png the plots.
A finished iteration is never redone: run the same command again to continue, or with a
larger ``--iterations`` to go on.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facet.errors import ConfigError, FacetError, exit_with


@dataclass
class ActiveConfig:
    committee: str  # a `facet.train --ensemble` run directory
    data: list[str]  # the committee's training data
    out: str
    iterations: int = 3
    start: str | None = None  # structures to start MD from (default: the training data)
    trajectories: int = 4  # MD runs per iteration
    temperature: float = 3000.0  # K
    md_steps: int = 400
    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01
    sample_every: int = 10  # MD steps between looks at the uncertainty
    threshold: float | None = None  # eV/Å; None: from the committee's validation set
    halt: float | None = None  # eV/Å; None: 4 x threshold (no halt for threshold 0)
    max_frames: int = 32  # per iteration
    min_separation: int = 50  # MD steps between two selected frames of one trajectory
    oracle: str | None = None  # FILE.py:NAME or module:NAME
    test: str | None = None  # labelled structures to report errors on
    finetune_steps: int = 100  # optimiser steps per member and iteration
    # fine-tuning starts from trained members: a fraction of their step size
    finetune_learning_rate_factor: float = 0.3
    replay: int = 96  # original training structures mixed into each fine-tuning set
    runtime: str = "pjrt"
    seed: int = 0


# The loop's own committee files pad on a coarser ladder (2 rungs per octave, up to 50 %
# padding instead of 25 %, per buckets.ladder_ceil): each new committee then compiles a few shapes for its MD and
# test structures instead of many (a compilation costs seconds, a step milliseconds).
LOOP_BUCKETS = {"steps_per_octave": 2, "min_atoms": 8, "min_edges": 64}


@dataclass
class Frame:
    """One MD snapshot with the committee's verdict on it."""

    atoms: Any  # ase.Atoms (positions and cell only)
    trajectory: int
    step: int
    max_force_std: float


# ----------------------------------------------------------------------------- pieces


def load_oracle(spec: str):
    """The ASE calculator of an oracle spec, FILE.py:NAME or module:NAME (NAME() gives it)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ConfigError(f"--oracle {spec!r}: give FILE.py:NAME or module:NAME, where NAME() returns an ASE "
                          "calculator")
    if path.endswith(".py"):
        if not Path(path).exists():
            raise ConfigError(f"--oracle {spec!r}: {path} not found")
        module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as err:
            raise ConfigError(f"--oracle {spec!r}: cannot import {path}: {err}") from err
    factory = getattr(module, name, None)
    if factory is None:
        raise ConfigError(f"--oracle {spec!r}: {path} has no {name}")
    return factory()


def run_md(calc, atoms, cfg: ActiveConfig, trajectory: int, halt: float, log=print) -> list[Frame]:
    """Langevin MD from `atoms` with the committee calculator; every `sample_every` steps a
    Frame. Stops early when the largest force std passes `halt` (or the model fails)."""
    from ase import units
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin

    # thermalize_momenta is ASE >= 3.29's name for MaxwellBoltzmannDistribution
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or \
        velocitydistribution.MaxwellBoltzmannDistribution
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng([cfg.seed, trajectory])
    thermalize(atoms, temperature_K=cfg.temperature, rng=rng)
    dyn = Langevin(atoms, cfg.timestep_fs * units.fs, temperature_K=cfg.temperature,
                   friction=cfg.friction_per_fs / units.fs, fixcm=False, rng=rng)
    frames: list[Frame] = []
    step = 0
    while step < cfg.md_steps:
        try:
            dyn.run(cfg.sample_every)
            std = float(np.max(calc.get_property("forces_std", atoms)))
        except RuntimeError as err:  # non-finite model output: the trajectory is lost
            log(f"  trajectory {trajectory}: stopped at step {step}: {err}")
            break
        step += cfg.sample_every
        snapshot = atoms.copy()
        snapshot.calc = None
        frames.append(Frame(snapshot, trajectory, step, std))
        if std > halt:
            log(f"  trajectory {trajectory}: halted at step {step}, largest force std {std:.2f} eV/Å > {halt:.2f}")
            break
    return frames


def select_frames(frames: Sequence[Frame], threshold: float, max_frames: int, min_separation: int) -> list[Frame]:
    """The frames above `threshold`, most uncertain first, no two of one trajectory closer
    than `min_separation` steps, at most `max_frames`."""
    chosen: list[Frame] = []
    for frame in sorted((f for f in frames if f.max_force_std > threshold), key=lambda f: -f.max_force_std):
        if len(chosen) >= max_frames:
            break
        if all(c.trajectory != frame.trajectory or abs(c.step - frame.step) >= min_separation for c in chosen):
            chosen.append(frame)
    return chosen


def label_frames(frames: Sequence[Frame], oracle, log=print) -> tuple[list, list[str]]:
    """(labelled ase.Atoms, failure messages). A frame the oracle fails on, or labels with
    non-finite numbers, is reported and skipped."""
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled, failures = [], []
    for frame in frames:
        where = f"trajectory {frame.trajectory} step {frame.step}"
        atoms = frame.atoms.copy()
        try:
            atoms.calc = oracle
            energy = float(atoms.get_potential_energy())
            forces = np.array(atoms.get_forces())
            stress = np.array(atoms.get_stress(voigt=False)) if atoms.pbc.all() else None
            if not (np.isfinite(energy) and np.isfinite(forces).all()
                    and (stress is None or np.isfinite(stress).all())):
                raise ValueError("non-finite energy, forces or stress")
        except Exception as err:  # any oracle error: report the frame and go on
            message = f"{where}: {type(err).__name__}: {err}"
            log(f"  oracle failed on {message}; skipped")
            failures.append(message)
            continue
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces,
                                           **({"stress": stress} if stress is not None else {}))
        atoms.info.update(group=f"active-t{frame.trajectory}", md_step=frame.step,
                          max_force_std=frame.max_force_std)
        labelled.append(atoms)
    return labelled, failures


def spearman(x, y) -> float:
    """Spearman's rank correlation (tied values share their mean rank); nan below 3 points."""
    def ranks(v):
        _, inverse, counts = np.unique(np.asarray(v, dtype=float), return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - counts + ends - 1) / 2.0)[inverse]

    if len(x) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def graph_labels(graphs, elements) -> list[tuple]:
    """(ase.Atoms, energy, forces) of training graphs."""
    from ase import Atoms
    from ase.data import atomic_numbers

    numbers = np.array([atomic_numbers[e] for e in elements])
    return [(Atoms(numbers[g.species], positions=g.positions, cell=g.cell, pbc=bool(np.any(g.cell))),
             g.energy, g.forces) for g in graphs]


def evaluate(model_path: Path, labelled: Sequence[tuple], runtime: str) -> dict:
    """Energy/force errors of a committee on labelled (atoms, energy, forces), and how its
    uncertainty ranks them: per structure the largest force std and the largest force error (eV/Å)."""
    from facet.calculator import FacetCalculator

    calc = FacetCalculator(str(model_path), runtime=runtime)
    energy_err, force_err, max_std, max_err = [], [], [], []
    # largest first: a smaller structure then reuses a compiled bucket up to one rung larger
    order = sorted(range(len(labelled)), key=lambda i: -len(labelled[i][0]))
    for atoms, energy, forces in (labelled[i] for i in order):
        atoms = atoms.copy()
        calc.calculate(atoms, ["energy", "forces"])
        energy_err.append(abs(calc.results["energy"] - energy) / len(atoms))
        force_err.append(np.abs(calc.results["forces"] - forces).ravel())
        max_std.append(float(np.max(calc.results["forces_std"])))
        max_err.append(float(np.max(np.linalg.norm(calc.results["forces"] - forces, axis=1))))
    return {"energy_mae_mev_atom": 1e3 * float(np.mean(energy_err)),
            "force_mae_mev_A": 1e3 * float(np.mean(np.concatenate(force_err))),
            "spearman_std_vs_error": spearman(max_std, max_err),
            "max_force_std": max_std, "max_force_error": max_err}


def auto_threshold(model_path: Path, base, runtime: str) -> float:
    """1.5 x the 90th percentile of the committee's largest force std per structure on its
    validation set: frames past it are less certain than nearly all data like the training data."""
    result = evaluate(model_path, graph_labels(base.valid, base.elements), runtime)
    return 1.5 * float(np.percentile(result["max_force_std"], 90))


def member_checkpoints(run_dir: Path) -> list[Path]:
    paths = sorted(run_dir.glob("member_*/checkpoints/last.ckpt"), key=lambda p: int(p.parts[-3].split("_")[1]))
    if len(paths) < 2:
        raise ConfigError(f"{run_dir}: no committee here (need member_K/checkpoints/last.ckpt for K = 0, 1, ...; "
                          "train one with `python -m facet.train --ensemble 4 --out DIR`)")
    return paths


def finetune(members: Sequence[Path], trained_configs: Sequence, base, labelled_graphs: list, out: Path,
             cfg: ActiveConfig, log=print) -> Path:
    """Fine-tune each member from its checkpoint on the labelled frames plus `replay` original
    training structures, at a fraction of its training step size with a short warm-up and its
    fitted statistics (species energies, scale, r_max) frozen, one validation at the end;
    export their committee. Returns the committee file. trained_configs: the members' configs
    as trained (not a previous round's), so that every round's step size is the same fraction
    of the trained one, not compounded."""
    from facet import checkpoint, committee
    from facet import train as ftrain

    rng = np.random.default_rng([cfg.seed, len(labelled_graphs)])
    n_replay = min(len(base.train), cfg.replay)
    replay = [base.train[i] for i in rng.choice(len(base.train), n_replay, replace=False)]
    # a validation pass per member is only a log line here: a slice of the set is enough
    data = dataclasses.replace(base, train=labelled_graphs + replay, valid=base.valid[:32])
    log(f"  fine-tuning {len(members)} members on {len(labelled_graphs)} labelled frames + {n_replay} original "
        f"structures, {cfg.finetune_steps} steps each")
    paths = []
    for k, (ckpt, trained) in enumerate(zip(members, trained_configs)):
        payload = checkpoint.load(ckpt)
        member_cfg = dataclasses.replace(
            trained, max_steps=cfg.finetune_steps, max_time_minutes=0.0, eval_every=cfg.finetune_steps + 1,
            learning_rate=trained.learning_rate * cfg.finetune_learning_rate_factor,
            statistics_learning_rate_factor=0.0,  # the fitted energy reference and r_max stay put
            warmup_steps=min(trained.warmup_steps, max(1, cfg.finetune_steps // 10)))
        (out / f"member_{k}").mkdir(parents=True, exist_ok=True)
        # batches padded to the original set's budget: every round and member shares one
        # compiled training step (a new shape costs about a minute of compilation here)
        trainer = ftrain.Trainer(member_cfg, data, out / f"member_{k}", init_params=payload["ema_params"],
                                 log=log, progress=False, statistics_graphs=base.train)
        trainer.run(cfg.finetune_steps, started_at=time.time())
        paths.append(trainer.ckpt_dir / "last.ckpt")
    committee.export_committee(paths, out / "committee.hlo", buckets=LOOP_BUCKETS)
    return out / "committee.hlo"


# ----------------------------------------------------------------------------- report


def plot(records: list[dict], out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in records]
    tested = [r for r in records if r.get("test")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if tested:
        ax1.plot([r["iteration"] for r in tested], [r["test"]["force_mae_mev_A"] for r in tested], "o-",
                 label="force MAE (meV/Å)")
        ax1b = ax1.twinx()
        ax1b.plot([r["iteration"] for r in tested], [r["test"]["energy_mae_mev_atom"] for r in tested], "s--",
                  color="C1", label="energy MAE (meV/atom)")
        ax1b.set_ylabel("energy MAE (meV/atom)", color="C1")
        ax1.set_ylabel("force MAE (meV/Å)", color="C0")
        ax1.set_title("error on the test set")
    ax1.set_xlabel("iteration")
    ax1.set_xticks(its)
    ax2.bar(its, [r["frames_labelled_total"] for r in records], color="C2")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("labelled frames (total)")
    ax2.set_xticks(its)
    ax2.set_title("training frames added by the loop")
    fig.tight_layout()
    fig.savefig(out / "active.png", dpi=120)
    plt.close(fig)
    if tested:
        fig, ax = plt.subplots(figsize=(5, 5))
        for r in tested:
            t = r["test"]
            ax.scatter(t["max_force_std"], t["max_force_error"], s=12,
                       label=f"iteration {r['iteration']} (Spearman {t['spearman_std_vs_error']:.2f})")
        lo = min(min(r["test"]["max_force_std"] + r["test"]["max_force_error"]) for r in tested)
        hi = max(max(r["test"]["max_force_std"] + r["test"]["max_force_error"]) for r in tested)
        ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="error = std")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 4x10^-1
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("largest predicted force std per structure (eV/Å)")
        ax.set_ylabel("largest force error per structure (eV/Å)")
        ax.set_title("calibration on the test set")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "calibration.png", dpi=120)
        plt.close(fig)


def write_report(records: list[dict], cfg: ActiveConfig, out: Path) -> None:
    from facet.files import atomic_write

    lines = ["# Active learning", "",
             f"Committee `{cfg.committee}`, MD at {cfg.temperature:g} K ({cfg.trajectories} trajectories x "
             f"{cfg.md_steps} steps per iteration), oracle `{cfg.oracle}`, test set `{cfg.test}`.", "",
             "| iteration | threshold (eV/Å) | frames sampled | selected | labelled | oracle failures | "
             "test energy MAE (meV/atom) | test force MAE (meV/Å) | Spearman(std, error) | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        t = r.get("test") or {}
        fmt = lambda key, spec: format(t[key], spec) if key in t else "-"  # noqa: E731
        lines.append(f"| {r['iteration']} | {r['threshold']:.3f} | {r.get('frames_sampled', '-')} | "
                     f"{r.get('frames_selected', '-')} | {r.get('frames_labelled', '-')} | "
                     f"{r.get('oracle_failures', '-')} | {fmt('energy_mae_mev_atom', '.1f')} | "
                     f"{fmt('force_mae_mev_A', '.0f')} | {fmt('spearman_std_vs_error', '.2f')} | "
                     f"{r['seconds'] / 60:.1f} |")
    lines += ["", "![errors and frames](active.png)", "", "![calibration](calibration.png)", ""]
    atomic_write(out / "report.md", "\n".join(lines).encode())


# ----------------------------------------------------------------------------- the loop


def collect(model_path: Path, starts, oracle, it_dir: Path, iteration: int, threshold: float, cfg: ActiveConfig,
            record: dict, log=print) -> list | None:
    """One iteration's new labelled frames: MD with the committee, the uncertain frames
    written to it_dir/candidates.extxyz, labelled by the oracle into labelled.extxyz.
    Without an oracle: the user's labelled.extxyz once it exists, else None (candidates
    already written are kept, not sampled again)."""
    import ase.io

    from facet.calculator import FacetCalculator
    from facet.files import atomic_write

    candidates_path, labelled_path = it_dir / "candidates.extxyz", it_dir / "labelled.extxyz"
    if oracle is None and candidates_path.exists():
        if not labelled_path.exists():
            return None
        labelled = ase.io.read(labelled_path, ":")
        record.update(frames_selected=len(ase.io.read(candidates_path, ":")), frames_labelled=len(labelled))
        return labelled
    t0 = time.time()
    calc = FacetCalculator(str(model_path), runtime=cfg.runtime)
    halt = cfg.halt if cfg.halt is not None else (4 * threshold if threshold > 0 else float("inf"))
    rng = np.random.default_rng([cfg.seed, iteration])
    frames: list[Frame] = []
    for k, i in enumerate(rng.choice(len(starts), cfg.trajectories, replace=len(starts) < cfg.trajectories)):
        frames += run_md(calc, starts[i], dataclasses.replace(cfg, seed=cfg.seed * 1000 + iteration), k, halt, log)
    record["md_s"] = time.time() - t0
    chosen = select_frames(frames, threshold, cfg.max_frames, cfg.min_separation)
    log(f"iteration {iteration}: {len(frames)} frames sampled, {len(chosen)} selected above {threshold:.3f} eV/Å")
    candidates = []
    for f in chosen:
        atoms = f.atoms.copy()
        atoms.info.update(trajectory=f.trajectory, md_step=f.step, max_force_std=f.max_force_std)
        candidates.append(atoms)
    ase.io.write(candidates_path, candidates, format="extxyz")
    record.update(frames_sampled=len(frames), frames_selected=len(chosen),
                  largest_force_std=max((f.max_force_std for f in frames), default=0.0))
    if oracle is None:
        return None
    t0 = time.time()
    labelled, failures = label_frames(chosen, oracle, log)
    record["label_s"] = time.time() - t0
    if failures:
        atomic_write(it_dir / "oracle_failures.txt", ("\n".join(failures) + "\n").encode())
    ase.io.write(labelled_path, labelled, format="extxyz")
    record.update(frames_labelled=len(labelled), oracle_failures=len(failures))
    return labelled


def run(cfg: ActiveConfig, log=print) -> list[dict]:
    import ase.io

    from facet import checkpoint, committee
    from facet import data as fdata
    from facet import graph as fgraph
    from facet import train as ftrain
    from facet.files import atomic_write

    out = Path(cfg.out)
    members = member_checkpoints(Path(cfg.committee))
    committee.load_members(members)  # same architecture, elements, cutoff: fails early otherwise
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "active_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    oracle = load_oracle(cfg.oracle) if cfg.oracle else None
    trained_configs = [checkpoint.load(p)["config"] for p in members]
    first = trained_configs[0]
    base = ftrain.prepare_data(cfg.data, first, elements=tuple(first.model.elements), log=log)
    species_index = fgraph.species_index(base.elements)
    test = [(s.to_atoms(), s.energy, s.forces) for s in fdata.read_structures(cfg.test)] if cfg.test else None
    starts = [s.to_atoms() for s in fdata.read_structures(cfg.start or cfg.data[0], require_energy=False,
                                                          require_forces=False)]
    model_path = Path(cfg.committee) / "committee.hlo"
    if not model_path.exists():
        committee.export_committee(members, model_path)

    records: list[dict] = []
    labelled_all: list = []
    threshold = cfg.threshold
    for iteration in range(cfg.iterations + 1):
        it_dir = out / f"iter_{iteration}"
        summary_path = it_dir / "summary.json"
        if summary_path.exists():  # done in an earlier run of this command
            record = json.loads(summary_path.read_text())
            threshold = record["threshold"]
            if (it_dir / "labelled.extxyz").exists():
                labelled_all += ase.io.read(it_dir / "labelled.extxyz", ":")
            if iteration > 0:
                members = [it_dir / f"member_{k}" / "checkpoints" / "last.ckpt" for k in range(len(members))]
                model_path = it_dir / "committee.hlo"
            records.append(record)
            log(f"iteration {iteration}: done earlier ({summary_path})")
            continue
        it_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        if threshold is None:
            threshold = auto_threshold(model_path, base, cfg.runtime)
            log(f"threshold: {threshold:.3f} eV/Å (1.5 x the 90th percentile of the largest force std per "
                "structure on the committee's validation set)")
        record: dict[str, Any] = {"iteration": iteration, "threshold": threshold}
        if iteration > 0:
            labelled = collect(model_path, starts, oracle, it_dir, iteration, threshold, cfg, record, log)
            if labelled is None:  # no oracle: the user labels the candidates
                log(f"iteration {iteration}: label {it_dir / 'candidates.extxyz'} (energy, forces, stress) into "
                    f"{it_dir / 'labelled.extxyz'}, then run this command again to go on")
                break
            labelled_all += labelled
            if not labelled_all:
                log(f"iteration {iteration}: nothing labelled yet; the committee is kept")
            else:
                structures = [fdata.Structure.from_atoms(a, group=a.info.get("group", "active"))
                              for a in labelled_all]
                graphs = [fgraph.build_graph(s, first.training_graph_cutoff, species_index) for s in structures]
                t1 = time.time()
                model_path = finetune(members, trained_configs, base, graphs, it_dir, cfg, log)
                record["finetune_s"] = time.time() - t1
                members = [it_dir / f"member_{k}" / "checkpoints" / "last.ckpt" for k in range(len(members))]
        record["frames_labelled_total"] = len(labelled_all)
        if test:
            t1 = time.time()
            record["test"] = evaluate(model_path, test, cfg.runtime)
            record["test_s"] = time.time() - t1
            t = record["test"]
            log(f"iteration {iteration}: test energy MAE {t['energy_mae_mev_atom']:.1f} meV/atom, force MAE "
                f"{t['force_mae_mev_A']:.0f} meV/Å, Spearman(largest force std, largest force error) "
                f"{t['spearman_std_vs_error']:.2f}")
        record["seconds"] = time.time() - t0
        records.append(record)
        atomic_write(summary_path, json.dumps(record, indent=2).encode())
        with open(out / "active.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: v for k, v in record.items() if k != "test"} |
                                {"test": {k: v for k, v in (record.get("test") or {}).items()
                                          if not isinstance(v, list)}}) + "\n")
        plot(records, out)
        write_report(records, cfg, out)
    return records


def parse_args(argv=None) -> ActiveConfig:
    defaults = ActiveConfig(committee="", data=[], out="")
    p = argparse.ArgumentParser(prog="python -m facet.active", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--committee", required=True, help="committee run directory (facet.train --ensemble N --out DIR)")
    p.add_argument("--data", action="append", required=True, help="the committee's training data (repeatable)")
    p.add_argument("--out", required=True, help="output directory (an earlier run there is continued)")
    p.add_argument("--start", help="structures to start MD from (default: the first --data file)")
    p.add_argument("--oracle", help="FILE.py:NAME or module:NAME; NAME() returns the labelling ASE calculator")
    p.add_argument("--test", help="labelled structures to report errors and calibration on each iteration")
    for field in dataclasses.fields(ActiveConfig):
        if field.name in ("committee", "data", "out", "start", "oracle", "test"):
            continue
        default = getattr(defaults, field.name)
        kind = float if field.name in ("threshold", "halt") else type(default)
        p.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                       help=f"(default: {default})")
    args = p.parse_args(argv)
    cfg = ActiveConfig(**vars(args))
    if cfg.iterations < 0 or cfg.trajectories < 1 or cfg.md_steps < cfg.sample_every or cfg.sample_every < 1:
        raise ConfigError("need --iterations >= 0, --trajectories >= 1 and --md-steps >= --sample-every >= 1")
    if cfg.runtime not in ("pjrt", "jax"):
        raise ConfigError(f"--runtime must be pjrt or jax, got {cfg.runtime!r}")
    return cfg


def main(argv=None) -> int:
    # The PJRT plugin logs a harmless "Unsupported fusion type" error at every compilation;
    # quiet XLA's C++ logs unless the user asked for them (before jax sets its own default).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        cfg = parse_args(argv)
        run(cfg)
    except (FacetError, FileNotFoundError) as err:
        return exit_with(err)
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
