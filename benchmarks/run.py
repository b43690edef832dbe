"""Facet against its peers, side by side on this machine: one command.

    python benchmarks/run.py --all                 # everything (about 3.5 hours on 2 cores)
    python benchmarks/run.py --steps speed,report  # some steps only
    make bench-peers                               # the same as --all

Steps (in order; each writes under benchmarks/out/, the report reads them all):

  envs        the peer environments (.venv-peers: sevenn, chgnet, nequix; .venv-mace:
              mace-torch), torch 2.13.0 CPU build (benchmarks/peers/setup_envs.sh)
  data        the pyxtal_ff Si DFT set, filtered and split by benchmarks/si/split.json, and
              the DeePMD water set split by benchmarks/water/split.json
  structures  the timing structures (benchmarks/peers/structures.py)
  train       every training run, one core and one thread each, two at a time, longest
              first (--jobs picks some): on Si, Facet-Small and MACE for --long-minutes,
              Nequix and SevenNet (their own trainers, from scratch) for --short-minutes, and
              Facet for exactly the Nequix goal time (10 min, its schedule ending there) at
              its own width and at the peers' (90k parameters); on water, Facet, Nequix and
              MACE for --water-minutes each
  export      the trained Facet model (final EMA weights) to
              benchmarks/out/models/facet-small-si.hlo, float32; and a Facet-Small with
              random weights and every element of the timing structures
  accuracy    test-split errors of every trained model and of the universal peers
              (SevenNet-0, CHGNet, Nequix-MP-1) zero-shot
  water       the water runs' test errors (data_3), Facet exported from its last checkpoint
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
STRUCTURES = OUT / "peers" / "structures"
MODELS = OUT / "models"
SPEED = OUT / "speed"
TRAIN = OUT / "train"
STEPS = ["envs", "data", "structures", "train", "export", "accuracy", "water", "speed", "relax", "scaling", "profile",
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
    run([py("main"), "benchmarks/water_data.py", "--out", str(WATER)])


def step_structures(args):
    run([py("peers"), "benchmarks/peers/structures.py", "--out", str(STRUCTURES)])


def facet_train_cmd(minutes: float, core: int, out: Path, *, data: str | None = None,
                    split: str = "benchmarks/si/split.json",
                    config: str = "benchmarks/configs/facet-small-si.json") -> str:
    return (f"XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' "
            f"taskset -c {core} {shlex.quote(os.path.relpath(py('main'), ROOT))} -m facet.train "
            f"--data {shlex.quote(data or si_json())} --split-indices {split} "
            f"--config {config} --out {shlex.quote(os.path.relpath(out, ROOT))} "
            f"--max-time {minutes:g} --no-progress")  # relative: it goes into the model file's header


def peer_train_cmd(peer: str, minutes: float, core: int, out: Path, *, config: str | None = None,
                   data: Path | None = None) -> list[str]:
    venv = "mace" if peer == "mace" else "peers"
    cmd = [py(venv), "benchmarks/peers/train_peer.py", peer, "--minutes", f"{minutes:g}", "--threads", "1",
           "--cores", str(core), "--out", str(out)]
    if config:
        cmd += ["--config", config]
    if data:
        cmd += ["--data", str(data)]
    return cmd


WATER = OUT / "water"
WATER_TRAIN = TRAIN / "water"


def train_jobs(args) -> dict:
    """Every training run: name -> (minutes, command builder taking a core, output directory).

    Si: Facet-Small, Facet at the peers' width and MACE for --long-minutes, Nequix and SevenNet
    for --short-minutes, and Facet for exactly the Nequix goal time (10 min; its schedule then ends at the goal, which a
    point on a longer curve cannot show), at its own width and at the peers' (~90k parameters).
    Water: Facet, Nequix and MACE for --water-minutes each."""
    jobs = {}

    def facet(name, minutes, overrides=(), **kw):
        out = (WATER_TRAIN if kw else TRAIN) / name.removesuffix("-water")
        def cmd(core):
            c = facet_train_cmd(minutes, core, out, **kw) + "".join(f" --set {shlex.quote(o)}" for o in overrides)
            return c
        jobs[name] = (minutes, cmd, out)

    def peer(name, peer_name, minutes, **kw):
        out = (WATER_TRAIN if kw else TRAIN) / peer_name
        jobs[name] = (minutes, lambda core: peer_train_cmd(peer_name, minutes, core, out, **kw), out)

    facet("facet", args.long_minutes)
    facet("facet-narrow", args.long_minutes, NARROW)
    peer("mace", "mace", args.long_minutes)
    peer("nequix", "nequix", args.short_minutes)
    peer("sevennet", "sevennet", args.short_minutes)
    for name, minutes, overrides in BUDGET_RUNS:
        facet(name, min(minutes, args.short_minutes) if args.quick else minutes, overrides)
    water = dict(data=os.path.relpath(WATER / "all.extxyz", ROOT), split="benchmarks/water/split.json",
                 config="benchmarks/configs/facet-small-water.json")
    facet("facet-water", args.water_minutes, **water)
    peer("nequix-water", "nequix", args.water_minutes, config="nequix-water.yml", data=WATER)
    peer("mace-water", "mace", args.water_minutes, config="mace-water.yml", data=WATER)
    return jobs


def step_train(args):
    """Run the training jobs one per core, longest first, each core taking the next job when free."""
    import threading

    jobs = train_jobs(args)
    names = list(jobs) if not args.jobs else [j.strip() for j in args.jobs.split(",")]
    unknown = sorted(set(names) - set(jobs))
    if unknown:
        raise SystemExit(f"unknown training job(s) {unknown}; jobs are {list(jobs)}")
    queue = sorted(names, key=lambda n: -jobs[n][0])
    total = sum(jobs[n][0] for n in names)
    log(f"training {len(names)} jobs, {total:g} core-minutes on 2 cores: {', '.join(queue)}")
    lock = threading.Lock()
    failed = []
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

    def worker(core):
        while True:
            with lock:
                if not queue:
                    return
                name = queue.pop(0)
            minutes, build, out = jobs[name]
            if out.exists():
                shutil.rmtree(out)  # a fresh run, never a resume
            out.mkdir(parents=True)
            cmd = build(core)
            (out / "command.txt").write_text((cmd if isinstance(cmd, str) else shlex.join(cmd)) + "\n")
            log(f"core {core}: {name} ({minutes:g} min)")
            rc = run(cmd, env=env, log_file=out / "run.log", check=False)
            if rc != 0:
                failed.append(f"{name} (return code {rc}, see {(out / 'run.log').relative_to(ROOT)})")

    threads = [threading.Thread(target=worker, args=(core,)) for core in args.cores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        log(f"training: failed: {', '.join(failed)}; continuing")


def model_file_cutoff(model_file: Path) -> float:
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
    export_cmd = [py("main"), "-m", "facet.export", str(ckpt), "--dtype", "float32",
                  *[f"--note={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in notes.items()]]
    run(export_cmd + ["-o", str(si_model)])
    listing_file = STRUCTURES / "listing.json"
    if listing_file.exists():
        listing = json.loads(listing_file.read_text())
        elements = sorted({e for s in listing.values() for st in s["structures"] for e in st["elements"]})
        run([py("main"), "benchmarks/facet_random_model.py", "--elements", *elements,
             "--cutoff", f"{model_file_cutoff(si_model):.6f}", "-o", str(MODELS / "facet-small-random.hlo")])
    else:
        log(f"export: {listing_file.relative_to(ROOT)} is missing (the structures step): "
            "no random-weight Facet for the timing structures")
    if args.ship:  # without the per-layer programs (4 MB, not 11): shipped files use the ghost shell on MPI
        run(export_cmd + ["--no-stages", "-o", str(ROOT / "export" / "facet-small-si.hlo")])
        log("exported to export/facet-small-si.hlo (no stage programs)")


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


def step_water(args):
    """Test-split errors of the water runs: Facet exported from its final checkpoint, the peers' files."""
    out = OUT / "accuracy" / "water"
    out.mkdir(parents=True, exist_ok=True)
    facet_model = MODELS / "facet-small-water.hlo"
    ckpt = WATER_TRAIN / "facet" / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        run([py("main"), "-m", "facet.export", str(ckpt), "-o", str(facet_model), "--dtype", "float32",
             "--note=trained_on=DeePMD liquid water (benchmarks/water/README.md)",
             "--note=split=benchmarks/water/split.json (train 280, valid 40, test 80 = data_3)"])
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    for label, name, venv, path in (("facet", "facet", "peers", facet_model),
                                    ("nequix", "nequix", "peers", WATER_TRAIN / "nequix" / "model.nqx"),
                                    ("mace", "mace", "mace", WATER_TRAIN / "mace" / "model.model")):
        if not path.exists():
            log(f"water: {label}: no model file {path.relative_to(ROOT)}; skipped")
            continue
        cmd = [py(venv), "benchmarks/peers/accuracy.py", "--model", name, "--data", str(WATER / "test.extxyz"),
               "--threads", "2", "--out", str(out / f"{label}.json"), "--model-path", str(path)]
        if args.quick:
            cmd += ["--limit", "10"]
        run(cmd, env=env, log_file=out / f"{label}.log", check=False)


def speed_models(random_facet: bool, only: str | None = None):
    facet = MODELS / ("facet-small-random.hlo" if random_facet else "facet-small-si.hlo")
    models = [("facet-small", "facet", "peers", facet)] + [
        (label, name, venv, None) for label, name, venv in ZERO_SHOT] + [
        ("mace-mp-small-arch", "mace-mp-small-arch", "mace", None)]
    return [m for m in models if only is None or m[0] in only.split(",")]


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
    for label, name, venv, path in speed_models(random_facet=False, only=args.models):
        timing(label, name, venv, path, [STRUCTURES / f"{s}.extxyz" for s in si_sets], "calls",
               SPEED / f"calls_si_{label}.json", repeats=3 if args.quick else 5)
    for label, name, venv, path in speed_models(random_facet=True, only=args.models):
        timing(label, name, venv, path, [STRUCTURES / "multi.extxyz"], "calls",
               SPEED / f"calls_multi_{label}.json", repeats=3 if args.quick else 5)
    sizes = "64,512" if args.quick else "64,512,4096"
    run([py("main"), "benchmarks/lammps_step.py", "--model", str(MODELS / "facet-small-si.hlo"),
         "--structure", "si-diamond", "--sizes", sizes, "--runtimes", "pjrt", "--startup-repeats", "0",
         "--out", str(SPEED / "lammps")],
        env={"OPENBLAS_NUM_THREADS": "1"}, log_file=SPEED / "lammps.log", check=False)


def step_relax(args):
    SPEED.mkdir(parents=True, exist_ok=True)
    only = args.relax_only.split(",") if args.relax_only else None
    if args.quick:
        only = ["Si_diamond_8", "NaCl_rocksalt_8"]
    for label, name, venv, path in speed_models(random_facet=True, only=args.models):
        cmd_out = SPEED / f"relax_{label}.json"
        timing(label, name, venv, path, [STRUCTURES / "relax.extxyz"], "relax", cmd_out, only=only)


def step_scaling(args):
    SPEED.mkdir(parents=True, exist_ok=True)
    # Facet over the whole range; the peers up to 1,728 atoms here (their 4,096-atom point
    # comes from the speed step; the report merges both), which keeps the step short.
    small = ["Si_diamond_64", "Si_diamond_216", "Si_diamond_512", "Si_diamond_1000", "Si_diamond_1728"]
    for label, name, venv, path in speed_models(random_facet=False, only=args.models):
        only = None if label == "facet-small" and not args.quick else small[:3 if args.quick else 5]
        timing(label, name, venv, path, [STRUCTURES / "si_scaling.extxyz"], "calls",
               SPEED / f"scaling_{label}.json", repeats=3, only=only, time_limit=300 if args.quick else 900)
    sizes = "64,216,512" if args.quick else "64,216,512,1000,1728,4096,8000"
    run([py("main"), "benchmarks/lammps_step.py", "--model", str(MODELS / "facet-small-si.hlo"),
         "--structure", "si-diamond", "--sizes", sizes, "--runtimes", "pjrt", "--startup-repeats", "0",
         "--out", str(SPEED / "lammps_scaling")],
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
    p.add_argument("--water-minutes", type=float, default=20.0, help="training budget of each water run")
    p.add_argument("--cores", type=lambda s: [int(c) for c in s.split(",")], default=[0, 1],
                   help="train step: the cores to run jobs on, one job per core at a time (default 0,1)")
    p.add_argument("--models", metavar="LABELS",
                   help="speed, relax, scaling: only these models (e.g. facet-small,sevennet-0,mace-mp-small-arch)")
    p.add_argument("--jobs", metavar="NAMES",
                   help="train step: comma-separated training jobs to run (default: all; see train_jobs)")
    p.add_argument("--relax-only", metavar="NAMES",
                   help="comma-separated crystals of the relaxation set to run (default: all 14)")
    p.add_argument("--keep-zero-shot", action="store_true",
                   help="accuracy: keep existing results of the zero-shot peers (nothing trained here changes them)")
    p.add_argument("--ship", action="store_true",
                   help="export: also write the Facet model, without its per-layer programs, to export/")
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
        args.water_minutes = min(args.water_minutes, 3.0)
    started = time.time()
    for step in STEPS:
        if step in steps:
            log(f"=== {step}")
            globals()[f"step_{step}"](args)
    log(f"done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
