"""Facet against its peers, side by side on this machine: one command.

    python benchmarks/run.py --all                 # everything (about 3 hours on 2 cores)
    python benchmarks/run.py --steps speed,report  # some steps only
    make bench-peers                               # the same as --all

Steps (in order; each writes under benchmarks/out/, the report reads them all):

  envs        the peer environments (.venv-peers: sevenn, chgnet, nequix; .venv-mace:
              mace-torch), torch 2.13.0 CPU build (benchmarks/peers/setup_envs.sh)
  data        the pyxtal_ff Si DFT set, filtered and split by benchmarks/si/split.json
  structures  the timing structures (benchmarks/peers/structures.py)
  train       Facet-Small and, from scratch with their own trainers, MACE, SevenNet and
              Nequix, each on one core with one thread: Facet || MACE for --long-minutes,
              then Nequix || SevenNet for --short-minutes
  budgets     Facet for 10 min (the Nequix goal), one core each, in parallel: Facet-Small with
              the default recipe, and a Facet of the peers' width (90k parameters); the schedule
              then ends at the goal time, which a point on a longer curve cannot show
  export      the trained Facet model (final EMA weights) to
              benchmarks/out/models/facet-small-si.hlo, float32; and a Facet-Small with
              random weights and every element of the timing structures
  accuracy    test-split errors of every trained model and of the universal peers
              (SevenNet-0, CHGNet, Nequix-MP-1) zero-shot
  speed       energy+forces+stress per call on Si 64/512/4096 and multi-element crystals,
              every model, then Facet through LAMMPS on the same Si cells
  relax       100 FIRE steps per crystal (unit cell and 2x2x2, rattled), every model
  scaling     time per call vs atoms, 64 -> 8,000 (Facet in ASE and LAMMPS, and peers)
  profile     where Facet's time goes: per-block timings of a training step
  report      benchmarks/RESULTS.md and benchmarks/figures/*.png

Timing runs use both cores (2 threads) one model at a time, so that models never
compete with each other; training runs are pinned one per core. Options set the
budgets; `--quick` shrinks everything for a smoke test of the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
STRUCTURES = OUT / "peers" / "structures"
MODELS = OUT / "models"
SPEED = OUT / "speed"
TRAIN = OUT / "train"
STEPS = ["envs", "data", "structures", "train", "budgets", "export", "accuracy", "speed", "relax", "scaling", "profile",
         "report"]

# Facet runs whose schedule ends at the Nequix goal time (10 min): (directory, minutes, --set overrides).
# The default recipe (benchmarks/configs/facet-small-si.json), and the same at the peers' width (~90k
# parameters), to show what width buys at a fixed budget.
NARROW = ("model.hidden_irreps=64x0e+32x1o+32x2e", "model.embedding_channels=64", "model.scalar_channels=64",
          "model.mixer_channels=32")
BUDGET_RUNS = (("facet-10min", 10, ()), ("facet-narrow-10min", 10, NARROW))
VENV = {"main": ".venv", "peers": ".venv-peers", "mace": ".venv-mace"}
# Timing models: (label, calculators.py name, venv, model path or None, weights label)
ZERO_SHOT = [("sevennet-0", "sevennet-0", "peers"), ("chgnet", "chgnet", "peers"),
             ("nequix-mp-1", "nequix-mp-1", "peers")]


def py(venv: str) -> str:
    return str(ROOT / VENV[venv] / "bin" / "python")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, *, env=None, log_file=None, check=True, background=False):
    """Run a command from the repository root (list or shell string)."""
    shell = isinstance(cmd, str)
    text = cmd if shell else shlex.join(str(c) for c in cmd)
    log(f"$ {text}")
    full_env = {**os.environ, **(env or {})}
    out = open(log_file, "w") if log_file else None
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, shell=shell, stdout=out or None,
                                stderr=subprocess.STDOUT if out else None)
    finally:
        if out:
            out.close()
    if background:
        return proc
    rc = proc.wait()
    if check and rc != 0:
        raise SystemExit(f"command failed (return code {rc}): {text}" + (f"; see {log_file}" if log_file else ""))
    return rc


def wait_all(procs, what: str) -> None:
    failed = [(name, p.wait()) for name, p in procs]
    bad = [f"{name} (return code {rc})" for name, rc in failed if rc != 0]
    if bad:
        log(f"{what}: failed: {', '.join(bad)} (see the logs in {TRAIN.relative_to(ROOT)}); continuing")


def si_json() -> str:
    out = subprocess.run([py("main"), "-c", "import sys; sys.path.insert(0, 'benchmarks'); import si_data; "
                          "print(si_data.si_json_path())"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip() or "cannot locate the pyxtal_ff Si data (run the envs step)")
    return os.path.relpath(out.stdout.strip(), ROOT)


# ----------------------------------------------------------------------------- steps


def step_envs(args):
    run(["make", "install"])
    run([py("main"), "-m", "pip", "install", "--quiet", "--no-deps", "pyxtal_ff==0.2.3"])
    run(["bash", "benchmarks/peers/setup_envs.sh"])


def step_data(args):
    run([py("main"), "benchmarks/si_data.py"])


def step_structures(args):
    run([py("peers"), "benchmarks/peers/structures.py", "--out", str(STRUCTURES)])


def facet_train_cmd(minutes: float, core: int, out: Path) -> str:
    return (f"XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' "
            f"taskset -c {core} {shlex.quote(os.path.relpath(py('main'), ROOT))} -m facet.train "
            f"--data {shlex.quote(si_json())} --split-indices benchmarks/si/split.json "
            f"--config benchmarks/configs/facet-small-si.json --out {shlex.quote(os.path.relpath(out, ROOT))} "
            f"--max-time {minutes:g} --no-progress")  # relative: it goes into the model file's header


def peer_train_cmd(peer: str, minutes: float, core: int) -> list[str]:
    venv = "mace" if peer == "mace" else "peers"
    return [py(venv), "benchmarks/peers/train_peer.py", peer, "--minutes", f"{minutes:g}", "--threads", "1",
            "--cores", str(core), "--out", str(TRAIN / peer)]


def step_train(args):
    TRAIN.mkdir(parents=True, exist_ok=True)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    facet_out = TRAIN / "facet"
    if facet_out.exists():
        shutil.rmtree(facet_out)  # a fresh run, never a resume
    facet_out.mkdir(parents=True)
    cmd = facet_train_cmd(args.long_minutes, 0, facet_out)
    (facet_out / "command.txt").write_text(cmd + "\n")
    log(f"training Facet-Small and MACE for {args.long_minutes:g} min, one core each")
    procs = [("facet", run(cmd, log_file=facet_out / "train.log", background=True)),
             ("mace", run(peer_train_cmd("mace", args.long_minutes, 1), env=env,
                          log_file=TRAIN / "mace.log", background=True))]
    wait_all(procs, "Facet || MACE")
    log(f"training Nequix and SevenNet for {args.short_minutes:g} min, one core each")
    procs = [("nequix", run(peer_train_cmd("nequix", args.short_minutes, 0), env=env,
                            log_file=TRAIN / "nequix.log", background=True)),
             ("sevennet", run(peer_train_cmd("sevennet", args.short_minutes, 1), env=env,
                              log_file=TRAIN / "sevennet.log", background=True))]
    wait_all(procs, "Nequix || SevenNet")


def step_budgets(args):
    """Facet trained for exactly the Nequix goal time (its schedule sized to it), two variants."""
    procs = []
    for core, (name, minutes, overrides) in enumerate(BUDGET_RUNS):
        out = TRAIN / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        cmd = facet_train_cmd(min(minutes, args.short_minutes) if args.quick else minutes, core, out)
        cmd += "".join(f" --set {shlex.quote(o)}" for o in overrides)
        (out / "command.txt").write_text(cmd + "\n")
        procs.append((name, run(cmd, log_file=out / "train.log", background=True)))
    log(f"training Facet budget runs {', '.join(n for n, _, _ in BUDGET_RUNS)}, one core each")
    wait_all(procs, "Facet budgets")


def trained_cutoff(model_file: Path) -> float:
    out = subprocess.run([py("main"), "-m", "facet.export", "inspect", "--json", str(model_file)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["cutoff"])


def step_export(args):
    MODELS.mkdir(parents=True, exist_ok=True)
    ckpt = TRAIN / "facet" / "checkpoints" / "last.ckpt"  # final EMA weights; its header carries test errors
    if not ckpt.exists():
        raise SystemExit(f"{ckpt.relative_to(ROOT)} is missing: run the train step first")
    si_model = MODELS / "facet-small-si.hlo"
    data = json.loads((OUT / "si" / "summary.json").read_text())
    notes = {
        "trained_on": "pyxtal_ff 0.2.3 Si DFT set (datasets/Si/PyXtal/Si.json): energies and forces; "
                      f"{data['kept']} of {data['structures']} structures kept (energy <= -3.0 eV/atom, "
                      "|force components| <= 20 eV/A)",
        "split": f"benchmarks/si/split.json (train {data['train']}, valid {data['valid']}, test {data['test']})",
        "training_command": (TRAIN / "facet" / "command.txt").read_text().strip(),  # repository-relative
    }
    run([py("main"), "-m", "facet.export", str(ckpt), "-o", str(si_model), "--dtype", "float32",
         *[f"--note={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in notes.items()]])
    listing_file = STRUCTURES / "listing.json"
    if listing_file.exists():
        listing = json.loads(listing_file.read_text())
        elements = sorted({e for s in listing.values() for st in s["structures"] for e in st["elements"]})
        run([py("main"), "benchmarks/facet_random_model.py", "--elements", *elements,
             "--cutoff", f"{trained_cutoff(si_model):.6f}", "-o", str(MODELS / "facet-small-random.hlo")])
    else:
        log(f"export: {listing_file.relative_to(ROOT)} is missing (the structures step): "
            "no random-weight Facet for the timing structures")
    if args.ship:
        shutil.copyfile(si_model, ROOT / "export" / "facet-small-si.hlo")
        log("copied to export/facet-small-si.hlo")


def accuracy_models():
    """(label, calculator name, venv, model path) of every model with test-split errors."""
    models = [("facet-small-si", "facet", "peers", MODELS / "facet-small-si.hlo")]
    for peer, fname in (("mace", "model.model"), ("sevennet", "model.pth"), ("nequix", "model.nqx")):
        models.append((f"{peer}-scratch", peer, "mace" if peer == "mace" else "peers", TRAIN / peer / fname))
    models += [(label, name, venv, None) for label, name, venv in ZERO_SHOT]
    return models


def step_accuracy(args):
    out = OUT / "accuracy"
    out.mkdir(parents=True, exist_ok=True)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    for label, name, venv, path in accuracy_models():
        if path is None and args.keep_zero_shot and (out / f"{label}.json").exists():
            log(f"accuracy: {label}: zero-shot result kept (--keep-zero-shot)")
            continue
        if path is not None and not path.exists():
            log(f"accuracy: {label}: no model file {path.relative_to(ROOT)}; skipped")
            continue
        cmd = [py(venv), "benchmarks/peers/accuracy.py", "--model", name, "--data", str(OUT / "si" / "test.extxyz"),
               "--threads", "2", "--out", str(out / f"{label}.json")]
        if path is not None:
            cmd += ["--model-path", str(path)]
        if args.quick:
            cmd += ["--limit", "20"]
        run(cmd, env=env, log_file=out / f"{label}.log", check=False)


def speed_models(random_facet: bool):
    facet = MODELS / ("facet-small-random.hlo" if random_facet else "facet-small-si.hlo")
    return [("facet-small", "facet", "peers", facet)] + [
        (label, name, venv, None) for label, name, venv in ZERO_SHOT] + [
        ("mace-mp-small-arch", "mace-mp-small-arch", "mace", None)]


def timing(label, name, venv, path, structures, mode, out_json, *, repeats=None, only=None, time_limit=600):
    cmd = [py(venv), "benchmarks/peers/timing.py", "--model", name, "--structures", *map(str, structures),
           "--mode", mode, "--threads", "2", "--cpus", "0,1", "--time-limit", str(time_limit), "--out", str(out_json)]
    if path is not None:
        cmd += ["--model-path", str(path)]
    if repeats:
        cmd += ["--repeats", str(repeats)]
    if only:
        cmd += ["--only", *only]
    if mode == "relax":  # small cells: the memory guard's extrapolation from one tiny cell is too pessimistic
        cmd += ["--max-memory-gb", "20"]
    run(cmd, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, log_file=out_json.with_suffix(".log"), check=False)


def step_speed(args):
    SPEED.mkdir(parents=True, exist_ok=True)
    si_sets = ["si_64", "si_512"] + ([] if args.quick else ["si_4096"])
    for label, name, venv, path in speed_models(random_facet=False):
        timing(label, name, venv, path, [STRUCTURES / f"{s}.extxyz" for s in si_sets], "calls",
               SPEED / f"calls_si_{label}.json", repeats=3 if args.quick else 5)
    for label, name, venv, path in speed_models(random_facet=True):
        timing(label, name, venv, path, [STRUCTURES / "multi.extxyz"], "calls",
               SPEED / f"calls_multi_{label}.json", repeats=3 if args.quick else 5)
    sizes = "64,512" if args.quick else "64,512,4096"
    run([py("main"), "benchmarks/lammps_step.py", "--model", str(MODELS / "facet-small-si.hlo"),
         "--structure", "si-diamond", "--sizes", sizes, "--out", str(SPEED / "lammps")],
        env={"OPENBLAS_NUM_THREADS": "1"}, log_file=SPEED / "lammps.log", check=False)


def step_relax(args):
    SPEED.mkdir(parents=True, exist_ok=True)
    only = args.relax_only.split(",") if args.relax_only else None
    if args.quick:
        only = ["Si_diamond_8", "NaCl_rocksalt_8"]
    for label, name, venv, path in speed_models(random_facet=True):
        cmd_out = SPEED / f"relax_{label}.json"
        timing(label, name, venv, path, [STRUCTURES / "relax.extxyz"], "relax", cmd_out, only=only)


def step_scaling(args):
    SPEED.mkdir(parents=True, exist_ok=True)
    # Facet over the whole range; the peers up to 1,728 atoms here (their 4,096-atom point
    # comes from the speed step; the report merges both), which keeps the step short.
    small = ["Si_diamond_64", "Si_diamond_216", "Si_diamond_512", "Si_diamond_1000", "Si_diamond_1728"]
    for label, name, venv, path in speed_models(random_facet=False):
        only = None if label == "facet-small" and not args.quick else small[:3 if args.quick else 5]
        timing(label, name, venv, path, [STRUCTURES / "si_scaling.extxyz"], "calls",
               SPEED / f"scaling_{label}.json", repeats=3, only=only, time_limit=300 if args.quick else 900)
    sizes = "64,216,512" if args.quick else "64,216,512,1000,1728,4096,8000"
    run([py("main"), "benchmarks/lammps_step.py", "--model", str(MODELS / "facet-small-si.hlo"),
         "--structure", "si-diamond", "--sizes", sizes, "--out", str(SPEED / "lammps_scaling")],
        env={"OPENBLAS_NUM_THREADS": "1"}, log_file=SPEED / "lammps_scaling.log", check=False)


def step_profile(args):
    run([py("main"), "benchmarks/profile_facet.py", "--out", str(OUT / "profile.json")],
        log_file=OUT / "profile.log", check=False)


def step_report(args):
    run([py("main"), "benchmarks/report.py"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all", action="store_true", help="run every step")
    p.add_argument("--steps", help=f"comma-separated steps from: {','.join(STEPS)}")
    p.add_argument("--long-minutes", type=float, default=60.0, help="Facet and MACE training budget")
    p.add_argument("--short-minutes", type=float, default=20.0, help="Nequix and SevenNet training budget")
    p.add_argument("--relax-only", metavar="NAMES",
                   help="comma-separated crystals of the relaxation set to run (default: all 14)")
    p.add_argument("--keep-zero-shot", action="store_true",
                   help="accuracy: keep existing results of the zero-shot peers (nothing trained here changes them)")
    p.add_argument("--ship", action="store_true", help="copy the exported Facet model to export/")
    p.add_argument("--quick", action="store_true", help="tiny budgets and sets: checks the pipeline, not the numbers")
    args = p.parse_args(argv)
    if not args.all and not args.steps:
        p.error("give --all or --steps")
    steps = STEPS if args.all else [s.strip() for s in args.steps.split(",")]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {unknown}; steps are {STEPS}")
    if args.quick:
        args.long_minutes, args.short_minutes = min(args.long_minutes, 3.0), min(args.short_minutes, 3.0)
    started = time.time()
    for step in STEPS:
        if step in steps:
            log(f"=== {step}")
            globals()[f"step_{step}"](args)
    log(f"done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
