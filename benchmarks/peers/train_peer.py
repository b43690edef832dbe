"""Train a peer potential from scratch on the Si DFT split, with the peer's own trainer.

    .venv-mace/bin/python  benchmarks/peers/train_peer.py mace --minutes 60 --threads 1 \
        --out benchmarks/out/train/mace
    .venv-peers/bin/python benchmarks/peers/train_peer.py sevennet --minutes 20 --threads 1 \
        --out benchmarks/out/train/sevennet
    .venv-peers/bin/python benchmarks/peers/train_peer.py nequix --minutes 20 --threads 1 \
        --out benchmarks/out/train/nequix
    .venv-peers/bin/python benchmarks/peers/train_peer.py nequix --minutes 20 --threads 1 \
        --config nequix-water.yml --data benchmarks/out/water --out benchmarks/out/train/water/nequix

Peers and their training programs (configurations in benchmarks/peers/configs/):
  mace      `mace_run_train` (mace-torch)                     -> OUT/model.model
  sevennet  `sevenn train input.yaml` from the `base` preset  -> OUT/model.pth
  nequix    `nequix.train.train(config)` via nequix_shim.py   -> OUT/model.nqx

Budget: the wall clock starts when the training command is launched (its data
loading, statistics and compilation count) and the command is stopped (SIGTERM, then
SIGKILL) when `--minutes` have passed. What it takes afterwards to get a usable model
file is timed separately as `finalise_s` (MACE writes no .model when stopped: it is
restarted with --restart_latest and --max_num_epochs equal to the epoch of its last
checkpoint, which trains no further and saves the model; SevenNet and Nequix keep
their best-validation checkpoint on disk, which is copied).

Threads: OMP/MKL/OpenBLAS thread counts, torch.set_num_threads and the XLA flags
`--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N` are set to
`--threads`, and the process (and so the trainer) is pinned with sched_setaffinity to
the first N cores it may use (e.g. `taskset -c 1 ... --threads 1` uses core 1).

Outputs in OUT: curve.jsonl (one record per validation pass on the 513-structure
validation split: time_s since launch, cpu_s used by the trainer so far, epoch =
training epochs completed, energy MAE per atom in meV/atom averaged over structures,
force MAE over all force components in meV/A),
result.json, model.*, config copy, train.log (trainer output, each line prefixed by its
time since launch), finalise.log, README. Data: benchmarks/out/si/{train,valid,test}.extxyz
(`.venv/bin/python benchmarks/si_data.py`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(os.path.abspath(__file__)).parent
REPO = HERE.parents[1]
SETUP_HINT = "bash benchmarks/peers/setup_envs.sh"
DEFAULT_DATA = REPO / "benchmarks" / "out" / "si"

PEERS = {
    "mace": dict(module="mace", dist="mace-torch", venv=".venv-mace", exe="mace_run_train",
                 config="mace-si.yml", model="model.model"),
    "sevennet": dict(module="sevenn", dist="sevenn", venv=".venv-peers", exe="sevenn",
                     config="sevennet-si.yml", model="model.pth"),
    "nequix": dict(module="nequix", dist="nequix", venv=".venv-peers", exe=None,
                   config="nequix-si.yml", model="model.nqx"),
}

# Used only to size Nequix's cosine schedule (n_epochs: auto) to the budget: start-up
# (statistics + XLA compilation of the training and evaluation steps) and one epoch
# (5126 structures, batch 16, ~350 padded batches) on one core, on the fast side of what
# was measured on the development machine (an epoch: 140-195 s wall on a shared core,
# ~115 s of CPU), so that the schedule rather runs past the budget than ends before it
# (the run would then stop early, leaving budget unused).
NEQUIX_STARTUP_S_1THREAD = 90.0
NEQUIX_EPOCH_S_1THREAD = 115.0
# Used only to place MACE's stage two (start_swa: auto) at 3/4 of the epochs expected in
# the budget: start-up (data, statistics, first validation) and one epoch (batch 10) on
# one core, on the slow side of what was measured (~95 s start-up; epochs took 390-450 s
# with mace-torch and torch of an earlier run, 200 s with the pinned ones now), so that stage
# two does start within the budget. Too slow a value starts stage two far too early: at 450 s
# a 60-minute run switched to the energy-heavy stage at 17 minutes, a third of the way in.
MACE_STARTUP_S_1THREAD = 100.0
# The epoch times above are for the Si training split. Another data set scales them by its
# graph size (atoms + directed edges within the peer's cutoff) over the Si split's at 5 A.
SI_TRAIN_GRAPH_SIZE = 797_837
MACE_EPOCH_S_1THREAD = 210.0

METRIC_NOTES = {
    "mace": "MACE's own validation metrics (results/*_train.txt, mode=eval): mae_e_per_atom = "
            "mean over structures of |dE|/n_atoms; mae_f = mean over all force components. "
            "Evaluated with the EMA weights. Same definitions as the curve; converted eV->meV.",
    "sevennet": "SevenNet's own validation metrics (lc.csv: validset_Energy_MAE, "
                "validset_Force_MAE): 'Energy' MAE is per atom, averaged over structures; "
                "'Force' MAE averages |dF| over all components. Same definitions as the "
                "curve; converted eV->meV. No EMA (the preset has none).",
    "nequix": "Nequix logs val/energy_mae_per_atom (mean over structures of |dE|/n_atoms, "
              "same as the curve) and val/force_mae, which is each batch's per-component "
              "force MAE averaged with weights = structures per batch (not per atom). The "
              "curve's force MAE is val/force_mae_per_component, added by nequix_shim.py "
              "from the same batches weighted by atoms = mean over all force components; "
              "nequix's own value is kept as force_mae_nequix_logged_mev_per_A. EMA weights.",
}


def rel(p: Path | str) -> str:
    """Path as written in commands and results: relative to the repo root when inside it."""
    p = Path(os.path.abspath(p))  # no resolve(): keep venv symlinks such as .venv-*/bin/python
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def die(msg: str, code: int = 2):
    print(f"train_peer: error: {msg}", file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------- setup

def limit_threads(n: int, cores: list[int] | None) -> list[int]:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        os.environ[var] = str(n)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads"))]
    flags += ["--xla_cpu_multi_thread_eigen=false", f"intra_op_parallelism_threads={n}"]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # benchmarks/gpu_training.sh sets "cuda"
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # mace-torch 0.3.16 with torch 2.13
    os.environ.setdefault("TQDM_DISABLE", "1")
    allowed = sorted(os.sched_getaffinity(0))
    if cores is None:
        cores = allowed[:n]
    if len(cores) < n:
        print(f"train_peer: warning: only {len(cores)} core(s) {cores} available for "
              f"{n} threads", file=sys.stderr)
    os.sched_setaffinity(0, cores)
    return cores


def check_env(peer: str) -> dict:
    spec = PEERS[peer]
    if importlib.util.find_spec(spec["module"]) is None:
        die(f"{spec['dist']} is not installed in this Python ({rel(sys.executable)}).\n"
            f"  Create the peer environments with:  {SETUP_HINT}\n"
            f"  then run:  {spec['venv']}/bin/python benchmarks/peers/train_peer.py {peer} ...")
    if spec["exe"]:
        exe = Path(sys.executable).parent / spec["exe"]
        if not exe.exists():
            die(f"{spec['exe']} not found next to {rel(sys.executable)}; recreate the "
                f"environment with:  {SETUP_HINT}")
    if peer == "nequix":
        for mod in ("equinox", "jraph", "optax", "cloudpickle", "matscipy", "lmdb", "ase_db_backends"):
            if importlib.util.find_spec(mod) is None:
                die(f"nequix needs {mod}, missing from {rel(sys.executable)}; run:  {SETUP_HINT}")
    return {"package": spec["dist"], "version": importlib.metadata.version(spec["dist"])}


def load_yaml(path: Path) -> dict:
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


def dump_yaml(obj: dict, path: Path) -> None:
    import yaml
    with open(path, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------- per-peer setup

class Peer:
    """Builds the command, follows the validation log, finalises the model."""

    name = ""

    def __init__(self, args, out: Path, work: Path, data: Path):
        self.args, self.out, self.work, self.data = args, out, work, data
        self.extra: dict = {}
        self.train_file = data / "train.extxyz"
        self.n_train = 5126
        self.epoch_scale = 1.0  # one epoch's cost relative to the Si split's (see SI_TRAIN_GRAPH_SIZE)
        if args.train_limit:
            import ase.io
            frames = ase.io.read(self.train_file, f":{args.train_limit}")
            self.train_file = work / "data" / f"train_first{len(frames)}.extxyz"
            self.train_file.parent.mkdir(parents=True, exist_ok=True)
            ase.io.write(self.train_file, frames, format="extxyz")
            self.n_train = len(frames)

    def config_path(self) -> Path:
        return HERE / "configs" / (self.args.config or PEERS[self.name]["config"])

    def measure_epoch_scale(self, cutoff: float) -> None:
        """Size an epoch of this training file against the Si split's (only the schedules use it)."""
        if self.train_file == DEFAULT_DATA / "train.extxyz":
            return
        import ase.io
        from ase.neighborlist import neighbor_list
        frames = ase.io.read(self.train_file, ":")
        self.n_train = len(frames)
        size = sum(len(a) + len(neighbor_list("i", a, cutoff)) for a in frames)
        self.epoch_scale = size / SI_TRAIN_GRAPH_SIZE
        self.extra["epoch_scale_note"] = (f"an epoch of {rel(self.train_file)} ({size:,} atoms + edges at "
                                          f"{cutoff:g} A) costs {self.epoch_scale:.2f}x one of the Si split")

    def prepare(self) -> list[str]:
        raise NotImplementedError

    def on_line(self, t: float, line: str) -> dict | None:
        raise NotImplementedError

    def finalise(self, env) -> tuple[list[str] | None, Path]:
        raise NotImplementedError

    def model_epoch(self, model_src: Path, best: dict | None) -> int | None:
        """Training epochs behind the saved model (its best validation pass)."""
        return best["epoch"] if best else None


class Mace(Peer):
    name = "mace"
    EVAL = re.compile(r"(Initial|Epoch (\d+)): head: (\S+), loss=\s*(\S+), "
                      r"MAE_E_per_atom=\s*(\S+) meV, MAE_F=\s*(\S+) meV")

    def prepare(self):
        cfg = load_yaml(self.config_path())
        self.measure_epoch_scale(float(cfg["r_max"]))
        if cfg.get("start_swa") == "auto":
            speed = max(1, self.args.threads) ** 0.7
            epoch_s = MACE_EPOCH_S_1THREAD * self.epoch_scale / speed
            expected = (self.args.minutes * 60 - MACE_STARTUP_S_1THREAD / speed) / epoch_s
            cfg["start_swa"] = max(1, int(0.75 * expected))
            self.extra["start_swa_note"] = (
                f"stage two from epoch index {cfg['start_swa']} (0-based) = 3/4 of the "
                f"{expected:.1f} epochs expected in the budget")
        cfg.update(train_file=rel(self.train_file),
                   valid_file=rel(self.data / "valid.extxyz"),
                   work_dir=rel(self.work))
        self.cfg = cfg
        dump_yaml(cfg, self.out / "config.yml")
        self.config_copy = self.out / "config.yml"
        self.n_eval = 0
        self.stage_two = False
        return [str(Path(sys.executable).parent / "mace_run_train")] + self._args(cfg)

    @staticmethod
    def _args(cfg: dict) -> list[str]:
        out = []
        for k, v in cfg.items():
            if v is True:
                out.append(f"--{k}")
            elif v is False or v is None:
                continue
            else:
                out.append(f"--{k}={v}")
        return out

    def _results_file(self) -> Path | None:
        files = sorted((self.work / "results").glob(f"{self.cfg['name']}_run-*_train.txt"))
        return files[0] if files else None

    def on_line(self, t, line):
        m = self.EVAL.search(line)
        if not m:
            if "Changing loss based on Stage Two Weights" in line:
                self.stage_two = True
                self.extra["stage_two_started_s"] = round(t, 2)
            return None
        epoch = 0 if m.group(1) == "Initial" else int(m.group(2)) + 1
        rec = {"time_s": round(t, 2), "epoch": epoch,
               "val_energy_mae_mev_per_atom": float(m.group(5)),
               "val_force_mae_mev_per_A": float(m.group(6))}
        # MACE writes the JSON record just before this log line: take full precision from it
        path = self._results_file()
        if path is not None:
            evals = [json.loads(x) for x in path.read_text().splitlines() if '"mode": "eval"' in x]
            if len(evals) > self.n_eval:
                r = evals[self.n_eval]
                rec["val_energy_mae_mev_per_atom"] = r["mae_e_per_atom"] * 1e3
                rec["val_force_mae_mev_per_A"] = r["mae_f"] * 1e3
                rec["val_loss"] = r["loss"]
        if self.stage_two:
            rec["stage_two"] = True  # val_loss uses the stage-two weights from here on
        self.n_eval += 1
        return rec

    def finalise(self, env):
        def epoch_of(p):
            return int(re.search(r"epoch-(\d+)", p.name).group(1))

        ckpts = sorted((self.work / "checkpoints").glob(f"{self.cfg['name']}_run-*_epoch-*.pt"),
                       key=lambda p: (epoch_of(p), p.name))
        # a checkpoint cut short by the stop cannot be loaded: set it aside
        while ckpts and not torch_loadable(ckpts[-1]):
            bad = ckpts.pop()
            bad.rename(bad.with_name(bad.name + ".incomplete"))
            self.extra["incomplete_checkpoint"] = rel(bad)
        if not ckpts:
            die("MACE saved no checkpoint within the budget (no epoch finished); raise --minutes")
        last = epoch_of(ckpts[-1])
        stage_two = ckpts[-1].name.endswith("_swa.pt")
        self.extra["checkpoint"] = rel(ckpts[-1])
        self.ckpt_epochs = last + 1  # file names count epochs from 0
        # restart from the newest checkpoint with no epochs left: MACE loads it, trains no
        # further and writes the .model files (stage two: <name>_stagetwo.model)
        cfg = dict(self.cfg, max_num_epochs=last, restart_latest=True)
        if stage_two:
            # MACE only evaluates/saves stage two when start_swa < max_num_epochs
            cfg["start_swa"] = min(int(self.cfg["start_swa"]), last - 1) if last > 0 else 0
            model = self.work / f"{self.cfg['name']}_stagetwo.model"
        else:
            cfg["swa"] = False  # no stage-two checkpoint: finalise stage one only
            cfg.pop("start_swa", None)
            model = self.work / f"{self.cfg['name']}.model"
        self.extra["model_stage_two"] = stage_two
        return [self.cmd[0]] + self._args(cfg), model

    def model_epoch(self, model_src, best):
        return self.ckpt_epochs


def torch_loadable(path: Path) -> bool:
    import torch
    try:
        torch.load(path, map_location="cpu", weights_only=False)
        return True
    except Exception:
        return False


class SevenNet(Peer):
    name = "sevennet"
    ELAPSED = re.compile(r"Epoch (\d+) elapsed")

    def prepare(self):
        over = load_yaml(self.config_path())
        preset = over.pop("preset", "base")
        import sevenn
        preset_path = Path(sevenn.__file__).parent / "presets" / f"{preset}.yaml"
        cfg = deep_merge(load_yaml(preset_path), over)
        cfg["data"].pop("load_testset_path", None)
        cfg["data"]["load_trainset_path"] = [rel(self.train_file)]
        cfg["data"]["load_validset_path"] = [rel(self.data / "valid.extxyz")]
        self.cfg = cfg
        self.extra["preset"] = f"sevenn/presets/{preset}.yaml (installed package)"
        dump_yaml(cfg, self.out / "input.yaml")
        self.config_copy = self.out / "input.yaml"
        return [str(Path(sys.executable).parent / "sevenn"), "train", rel(self.config_copy),
                "-s", "-w", rel(self.work)]

    def on_line(self, t, line):
        if "# learnable parameters" in line:
            self.extra["params_logged"] = int(line.split(":")[-1])
        m = self.ELAPSED.search(line)
        if not m:
            return None
        epoch = int(m.group(1))
        rows = []
        for path in sorted(self.work.glob("lc*.csv")):
            with open(path) as f:
                rows += [r for r in csv.DictReader(f) if r.get("epoch") == str(epoch)]
        if not rows:
            return None
        r = rows[-1]
        return {"time_s": round(t, 2), "epoch": epoch,
                "val_energy_mae_mev_per_atom": float(r["validset_Energy_MAE"]) * 1e3,
                "val_force_mae_mev_per_A": float(r["validset_Force_MAE"]) * 1e3,
                "val_loss": float(r["validset_TotalLoss"]),
                "train_energy_mae_mev_per_atom": float(r["trainset_Energy_MAE"]) * 1e3,
                "train_force_mae_mev_per_A": float(r["trainset_Force_MAE"]) * 1e3}

    def finalise(self, env):
        best = self.work / "checkpoint_best.pth"
        if best.exists() and torch_loadable(best):
            return None, best
        # stopped while writing the best checkpoint: newest periodic one instead
        periodic = sorted(self.work.glob("checkpoint_*.pth"),
                          key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else -1)
        periodic = [p for p in periodic if p.stem.split("_")[1].isdigit()
                    and int(p.stem.split("_")[1]) > 0 and torch_loadable(p)]
        if not periodic:
            die("SevenNet wrote no usable checkpoint within the budget (no epoch finished); "
                "raise --minutes")
        self.extra["fallback_checkpoint"] = "checkpoint_best.pth unusable; used " + rel(periodic[-1])
        return None, periodic[-1]

    def model_epoch(self, model_src, best):
        import torch
        return int(torch.load(model_src, map_location="cpu", weights_only=False)["epoch"])


class Nequix(Peer):
    name = "nequix"
    EPOCH = re.compile(r"^epoch: (\d+), logs: (\{.*\})\s*$")

    def prepare(self):
        cfg = load_yaml(self.config_path())
        self.measure_epoch_scale(float(cfg["cutoff"]))
        t = time.monotonic()
        data_dir = self.work / "data"
        cfg["train_path"] = rel(self.write_lmdb(self.train_file, data_dir / "train.aselmdb"))
        cfg["valid_path"] = rel(self.write_lmdb(self.data / "valid.extxyz", data_dir / "valid.aselmdb"))
        self.extra["data_conversion_s"] = round(time.monotonic() - t, 2)
        if cfg.get("n_epochs") == "auto":
            if self.args.epochs:
                cfg["n_epochs"] = self.args.epochs
            else:
                scale = max(1, self.args.threads) ** 0.7 / self.epoch_scale
                left = self.args.minutes * 60 - NEQUIX_STARTUP_S_1THREAD / max(1, self.args.threads) ** 0.7
                cfg["n_epochs"] = max(2, math.ceil(left * scale / NEQUIX_EPOCH_S_1THREAD))
            self.extra["n_epochs_note"] = ("cosine schedule length chosen by the driver to "
                                           "match the budget (n_epochs: auto)")
        self.cfg = cfg
        dump_yaml(cfg, self.out / "config.yml")
        self.config_copy = self.out / "config.yml"
        self.extra["config_resolved"] = rel(self.work / "config_resolved.yml")
        return [sys.executable, rel(HERE / "nequix_shim.py"), rel(self.config_copy),
                "--run-dir", rel(self.work)]

    @staticmethod
    def write_lmdb(src: Path, dst: Path) -> Path:
        """extxyz -> ASE LMDB (nequix reads ASE databases); stress stored as zeros."""
        import ase.db
        import ase.io
        import numpy as np
        from ase.calculators.singlepoint import SinglePointCalculator

        dst.parent.mkdir(parents=True, exist_ok=True)
        for p in (dst, Path(str(dst) + "-lock")):
            if p.exists():
                p.unlink()
        db = ase.db.connect(str(dst), type="aselmdb")
        for atoms in ase.io.read(src, ":"):
            e, f = atoms.get_potential_energy(), atoms.get_forces()
            clean = atoms.copy()
            clean.calc = SinglePointCalculator(clean, energy=e, forces=f, stress=np.zeros(6))
            db.write(clean)
        db.close() if hasattr(db, "close") else None
        return dst

    def on_line(self, t, line):
        m = self.EPOCH.match(line)
        if not m:
            if line.startswith("nequix_shim: statistics ready"):
                self.extra["stats_ready_s"] = round(t, 2)
            return None
        logs = ast.literal_eval(m.group(2))
        rec = {"time_s": round(t, 2), "epoch": int(m.group(1)) + 1,
               "val_energy_mae_mev_per_atom": logs["val/energy_mae_per_atom"] * 1e3,
               "val_force_mae_mev_per_A": logs["val/force_mae_per_component"] * 1e3,
               "force_mae_nequix_logged_mev_per_A": logs["val/force_mae"] * 1e3,
               "val_loss": logs["val/loss"]}
        return rec

    def finalise(self, env):
        return None, self.work / "checkpoint.nqx"


CLASSES = {"mace": Mace, "sevennet": SevenNet, "nequix": Nequix}


# ------------------------------------------------------------------------- running

def run_budgeted(cmd, env, budget_s, log_path: Path, on_line, curve_path: Path):
    """Run cmd from the repo root until it exits or budget_s passes; returns stats."""
    curve_f = open(curve_path, "w")
    log_f = open(log_path, "w")
    load_start = os.getloadavg()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, errors="replace")
    records = []

    def reader():
        for line in proc.stdout:
            t = time.monotonic() - t0
            log_f.write(f"[{t:9.2f}s] {line}")
            log_f.flush()
            try:
                rec = on_line(t, line.rstrip("\n"))
            except Exception as exc:  # a parse problem must not kill the run
                rec = None
                log_f.write(f"[train_peer] could not parse the line above: {exc!r}\n")
            if rec is not None:
                cpu = proc_cpu_s(proc.pid)
                if cpu is not None:
                    rec["cpu_s"] = cpu
                rec = {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}
                if t > budget_s:  # printed while being stopped
                    rec["after_budget"] = True
                records.append(rec)
                curve_f.write(json.dumps(rec) + "\n")
                curve_f.flush()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    stopped = False
    try:
        proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        stopped = True
        stop_group(proc)
    except KeyboardInterrupt:
        stop_group(proc)
        raise
    t_end = time.monotonic() - t0
    load_end = os.getloadavg()
    th.join(timeout=30)
    log_f.close()
    curve_f.close()
    return {"returncode": proc.returncode, "stopped_by_budget": stopped,
            "train_wall_s": round(t_end, 2),
            "train_cpu_s": round(child_cpu_s(), 2),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end]}, records


def child_cpu_s() -> float:
    """CPU seconds of all finished (waited-for) child processes of this driver."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user+system) used so far by a process and its waited-for children."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def stop_group(proc):
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def shell_join(cmd):
    import shlex
    return " ".join(shlex.quote(rel(c) if os.path.isabs(c) else c) for c in cmd)


# ---------------------------------------------------------------------- verification

def check_model(peer: str, model_path: Path, data: Path, threads: int) -> dict:
    """Load the model in the peer's ASE calculator; energy of the first test structure."""
    import ase.io
    test = ase.io.read(data / "test.extxyz", 0)
    ref = test.get_potential_energy()
    atoms = test.copy()
    t = time.monotonic()
    if peer == "mace":
        import torch
        torch.set_num_threads(threads)
        from mace.calculators import MACECalculator
        calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float32")
        params = sum(p.numel() for p in calc.models[0].parameters())
    elif peer == "sevennet":
        import torch
        torch.set_num_threads(threads)
        from sevenn.calculator import SevenNetCalculator
        calc = SevenNetCalculator(model=str(model_path), device="cpu")
        params = sum(p.numel() for p in calc.model.parameters())
    else:
        import equinox as eqx
        import jax
        from nequix.calculator import NequixCalculator
        calc = NequixCalculator(model_path=str(model_path), backend="jax", use_kernel=False)
        params = sum(int(p.size) for p in jax.tree.leaves(eqx.filter(calc.model, eqx.is_array)))
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()
    return {"params": int(params), "calculator": type(calc).__module__ + "." + type(calc).__name__,
            "test_structure": 0, "n_atoms": len(atoms), "energy_eV": energy,
            "ref_energy_eV": float(ref), "abs_error_meV_per_atom": abs(energy - ref) / len(atoms) * 1e3,
            "forces_shape": list(forces.shape), "seconds": round(time.monotonic() - t, 2)}


# ------------------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cores", default=None,
                    help="comma-separated cores to pin to (default: the first THREADS allowed)")
    ap.add_argument("--out", required=True, help="output directory (wiped work/ inside)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="directory with {train,valid,test}.extxyz")
    ap.add_argument("--config", default=None,
                    help="configuration file in benchmarks/peers/configs/ (default: the peer's Si one)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="nequix only: cosine schedule length (default: estimated from the budget)")
    ap.add_argument("--train-limit", type=int, default=None,
                    help="smoke tests only: train on the first N training structures")
    args = ap.parse_args(argv)

    cores = [int(c) for c in args.cores.split(",")] if args.cores else None
    cores = limit_threads(args.threads, cores)
    pkg = check_env(args.peer)
    data = Path(os.path.abspath(args.data))
    for split in ("train", "valid", "test"):
        if not (data / f"{split}.extxyz").exists():
            die(f"{rel(data / (split + '.extxyz'))} is missing; write the split with:  "
                f".venv/bin/python benchmarks/si_data.py")
    out = Path(os.path.abspath(args.out))
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)  # a fresh start: no cached graphs or checkpoints
    work.mkdir()
    for name in ("curve.jsonl", "result.json", "finalise.log", PEERS[args.peer]["model"]):
        if (out / name).exists():
            (out / name).unlink()

    peer = CLASSES[args.peer](args, out, work, data)
    t_prep = time.monotonic()
    cmd = peer.prepare()
    peer.cmd = cmd
    prep_s = time.monotonic() - t_prep
    env = dict(os.environ)
    budget_s = args.minutes * 60.0
    print(f"train_peer: {args.peer} {pkg['version']}, budget {args.minutes} min, "
          f"{args.threads} thread(s) on core(s) {cores}\n  $ {shell_join(cmd)}", flush=True)

    stats, curve = run_budgeted(cmd, env, budget_s, out / "train.log", peer.on_line,
                                out / "curve.jsonl")
    print(f"train_peer: training {'stopped at the budget' if stats['stopped_by_budget'] else 'exited'}"
          f" after {stats['train_wall_s']:.1f} s (return code {stats['returncode']}); "
          f"{len(curve)} validation points", flush=True)
    if not stats["stopped_by_budget"] and stats["returncode"] != 0:
        tail = (out / "train.log").read_text().splitlines()[-25:]
        die("the training command failed:\n" + "\n".join(tail) + f"\n(see {rel(out / 'train.log')})", 1)

    t_fin = time.monotonic()
    fin_cmd, model_src = peer.finalise(env)
    fin_rc = None
    if fin_cmd is not None:
        with open(out / "finalise.log", "w") as f:
            fin_rc = subprocess.run(fin_cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        if fin_rc != 0:
            die(f"finalising failed (return code {fin_rc}); see {rel(out / 'finalise.log')}", 1)
    if not model_src.exists():
        die(f"no model file {rel(model_src)} after training; see {rel(out / 'train.log')}", 1)
    model_path = out / PEERS[args.peer]["model"]
    shutil.copyfile(model_src, model_path)
    finalise_s = time.monotonic() - t_fin

    check = check_model(args.peer, model_path, data, args.threads)
    epochs = max((r["epoch"] for r in curve), default=0)
    epoch_time = None  # mean wall time of an epoch including its validation pass
    if len(curve) >= 2 and curve[-1]["epoch"] > curve[0]["epoch"]:
        epoch_time = (curve[-1]["time_s"] - curve[0]["time_s"]) / (curve[-1]["epoch"] - curve[0]["epoch"])
    # the validation pass of the saved model (MACE, SevenNet: the checkpoint's epoch;
    # Nequix: its lowest validation loss, which is when it saves)
    trained = [r for r in curve if r["epoch"] > 0]
    best = min(trained, key=lambda r: r.get("val_loss", r["val_force_mae_mev_per_A"])) if trained else None
    model_epoch = peer.model_epoch(model_src, best)
    best = next((r for r in trained if r["epoch"] == model_epoch), best)
    result = {
        "peer": args.peer, **pkg,
        "params": peer.extra.get("params_logged", check["params"]),
        "params_note": ("trainable parameters as logged by SevenNet; params_in_model_file also "
                        "counts its 5 fixed shift/scale/denominator values" if args.peer == "sevennet"
                        else "all parameter arrays of the trained model"),
        "params_in_model_file": check["params"],
        "budget_minutes": args.minutes, "budget_s": budget_s,
        "threads": args.threads, "cores": cores,
        "cwd": ".",
        "command": shell_join(cmd),
        "finalise_command": shell_join(fin_cmd) if fin_cmd else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")},
        "config_template": rel(peer.config_path()),
        "config_file": rel(peer.config_copy),
        "prep_s_outside_budget": round(prep_s, 2),
        **stats,
        "finalise_s": round(finalise_s, 2),
        "finalise_returncode": fin_rc,
        "epochs": epochs,
        "epoch_time_s": round(epoch_time, 1) if epoch_time else None,
        "first_validation_s": curve[0]["time_s"] if curve else None,
        "n_validation_points": len(curve),
        "last_validation": curve[-1] if curve else None,
        "model_validation": best,
        "model_epoch": model_epoch,
        "model_file": rel(model_path),
        "model_source": rel(model_src),
        "curve": rel(out / "curve.jsonl"),
        "metric_note": METRIC_NOTES[args.peer],
        "data": {s: rel(data / f"{s}.extxyz") for s in ("train", "valid", "test")},
        "train_file": rel(peer.train_file), "n_train": peer.n_train,
        "train_limit_smoke_test": args.train_limit,
        "check": check,
        **{f"peer_{k}": v for k, v in peer.extra.items()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "README").write_text(
        f"{args.peer} {pkg['version']} trained from scratch on the Si split for "
        f"{args.minutes} min on {args.threads} thread(s): `{shell_join(cmd)}` "
        f"(run from the repo root by benchmarks/peers/train_peer.py); {epochs} epochs, "
        f"model {rel(model_path)}, learning curve curve.jsonl, details result.json.\n")
    last = curve[-1] if curve else {}
    print(f"train_peer: done. {epochs} epochs, {check['params']} params, finalise {finalise_s:.1f} s; "
          f"last val E {last.get('val_energy_mae_mev_per_atom', float('nan')):.2f} meV/atom, "
          f"F {last.get('val_force_mae_mev_per_A', float('nan')):.1f} meV/A; "
          f"test[0] energy {check['energy_eV']:.4f} eV (ref {check['ref_energy_eV']:.4f}); "
          f"{rel(out / 'result.json')}", flush=True)


if __name__ == "__main__":
    main()
