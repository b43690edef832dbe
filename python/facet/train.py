"""Train a Facet model: `python -m facet.train --data train.extxyz --out runs/NAME`.

    python -m facet.train --data FILE [--data FILE ...] --out runs/NAME
        [--config FILE.json] [--set key=value ...]
        [--max-steps N | --max-time MINUTES] [--init-from CHECKPOINT]

Rerunning the same command after the run was killed resumes from
runs/NAME/checkpoints/last.ckpt. Outputs in runs/NAME: config.json,
metrics.jsonl, checkpoints/{last,best}.ckpt, training_curves.png, parity.png,
summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facet import losses
from facet.errors import ConfigError, FacetError, exit_with

if TYPE_CHECKING:
    import optax

def process_start_time() -> float:
    """When this process was launched (time.time() scale), so that imports count too; from
    /proc on Linux, else the time this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age if 0.0 <= age < 3600.0 else time.time()
    except (OSError, ValueError, IndexError):
        return time.time()


# Wall-clock origin: a command-line run's budget and its metrics' "time_s" and "wall_s" count
# from process launch (imports, data loading, graph building and compilation included);
# "time_s" also adds the earlier sessions of a resumed run.
PROCESS_START = process_start_time()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m facet.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help="training data: extxyz/xyz, ASE .db or pyxtal_ff .json (repeatable)")
    p.add_argument("--out", help="run directory (created; an existing run there is resumed)")
    p.add_argument("--config", help="JSON config file (fields of facet.config.TrainConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set batch_size=16 --set model.hidden_irreps=32x0e+16x1o")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-time", type=float, metavar="MINUTES",
                   help="wall-clock budget counted from launch: start-up, data, compilation and the final "
                        "validation all fit inside it")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="fine-tune from the parameters of an earlier checkpoint")
    p.add_argument("--split-indices", metavar="FILE", help="use a stored train/valid/test split (JSON index file)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train a committee of N members (seeds seed..seed+N-1, each in OUT/member_K with the "
                        "whole --max-time/--max-steps budget) and export OUT/committee.hlo")
    p.add_argument("--bootstrap", action="store_true",
                   help="with --ensemble: each member trains on a bootstrap resample of the training set")
    args = p.parse_args(argv)
    if not args.print_config and (not args.data or not args.out):
        p.error("--data and --out are required")
    return args


# ---------------------------------------------------------------------------
# Optimiser and the training step (pure; the Trainer only drives them)
# ---------------------------------------------------------------------------

# Parameters that are fitted statistics of the data or the graph rather than
# features: they get their own (lower, or zero) step size.
STATISTICS_PARAMETERS = ("r_max_raw", "bessel_frequencies", "species_shift", "species_scale", "global_scale")
# Matrices Muon leaves to Adam (as Nequix does): a lookup table and a 1-column readout.
NOT_MUON = ("embedding", "readout")


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def parameter_groups(params, cfg):
    """Label per parameter: "features", "statistics" or "frozen" (r_max when not trained)."""
    import jax

    def label(path, _):
        name = _path_names(path)[-1]
        if name == "r_max_raw" and not cfg.train_r_max:
            return "frozen"
        return "statistics" if name in STATISTICS_PARAMETERS else "features"

    return jax.tree_util.tree_map_with_path(label, params)


def create_optimizer(cfg, params) -> "optax.GradientTransformation":
    """Clipping, then the configured optimiser per parameter group. Every group's step
    size is cfg.learning_rate (times statistics_learning_rate_factor for the statistics)
    times a schedule factor injected per step as `learning_rate` (set_learning_rate)."""
    import jax
    import optax

    def base(learning_rate, factor):
        lr = learning_rate * cfg.learning_rate * factor
        if cfg.optimizer == "prodigy":
            return optax.contrib.prodigy(learning_rate=lr, betas=(0.9, 0.999), eps=cfg.prodigy_eps,
                                         estim_lr0=cfg.prodigy_d0, weight_decay=cfg.weight_decay,
                                         safeguard_warmup=True)
        if cfg.optimizer == "adam" or factor != 1.0:
            return optax.adamw(lr, weight_decay=cfg.weight_decay)
        dims = jax.tree_util.tree_map_with_path(
            lambda path, x: (optax.contrib.MuonDimensionNumbers(0, 1)
                             if x.ndim == 2 and not set(_path_names(path)) & set(NOT_MUON) else None), params)
        return optax.contrib.muon(lr, weight_decay=cfg.weight_decay, adam_weight_decay=cfg.weight_decay,
                                  muon_weight_dimension_numbers=dims)

    factor = cfg.statistics_learning_rate_factor
    groups = {
        "features": optax.inject_hyperparams(lambda learning_rate: base(learning_rate, 1.0))(learning_rate=1.0),
        "statistics": (optax.set_to_zero() if factor == 0 else
                       optax.inject_hyperparams(lambda learning_rate: base(learning_rate, factor))(learning_rate=1.0)),
        "frozen": optax.set_to_zero(),
    }
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm),
                       optax.multi_transform(groups, lambda p: parameter_groups(p, cfg)))


def set_learning_rate(opt_state, scale):
    """The optimiser state with every group's injected schedule factor set to `scale`."""
    import jax
    import jax.numpy as jnp

    def set_one(state):
        if is_injected(state):
            return state._replace(hyperparams={**state.hyperparams,
                                               "learning_rate": jnp.asarray(scale, jnp.float32)})
        return state

    return jax.tree.map(set_one, opt_state, is_leaf=is_injected)


def is_injected(state) -> bool:
    """An optax inject_hyperparams state (its class differs between optax versions)."""
    import optax

    injected = tuple(getattr(optax, name) for name in ("InjectHyperparamsState", "InjectStatefulHyperparamsState")
                     if hasattr(optax, name))
    return isinstance(state, injected) and "learning_rate" in state.hyperparams


def learning_rate_scale(cfg, step: int, progress: float) -> float:
    """Schedule factor at optimiser step `step` (0-based) and run progress in [0, 1]:
    linear warm-up over warmup_steps steps from warmup_start, then decay to zero."""
    warm = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        warm = cfg.warmup_start + (1.0 - cfg.warmup_start) * (step + 1) / cfg.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    decay = 1.0 - progress if cfg.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * decay


def train_step(module, optimizer, cfg, params, opt_state, batch, lr_scale, energy_weight=None):
    """One optimiser step on a (devices, ...) stacked batch. Returns (params, opt_state,
    loss, error sums, finite); a non-finite loss or gradient leaves parameters and
    optimiser state untouched (finite is then False). lr_scale and energy_weight are
    traced, so the schedule and the final stage do not recompile."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(p):
        sums = losses.stacked_sums(module, p, batch, cfg.model.graph_cutoff, cfg.huber_delta)
        return losses.loss_from_sums(sums, cfg, energy_weight), sums

    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    opt_state = set_learning_rate(opt_state, lr_scale)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    return keep(new_params, params), keep(new_opt_state, opt_state), loss, sums, finite


def make_train_step(module, optimizer, cfg):
    """train_step jitted for one model, optimiser and config:
    (params, opt_state, batch, lr_scale[, energy_weight])."""
    import functools

    import jax

    return jax.jit(functools.partial(train_step, module, optimizer, cfg))


_JITTED: dict[str, tuple] = {}


def jitted_functions(cfg, module, optimizer) -> tuple:
    """(train step, evaluation sums, EMA update, prediction, energies) for this config, jitted once per
    process: the members of a committee and the fine-tuning runs of one model share their
    compilations (about half a minute each on a CPU). The seed and the run limits do not
    enter the programs, so they are not part of the key."""
    import jax

    from facet.config import to_dict

    key = json.dumps(to_dict(dataclasses.replace(cfg, seed=0, max_steps=0, max_time_minutes=0)), sort_keys=True,
                     default=str)
    if key not in _JITTED:
        evaluate = jax.jit(lambda p, b: losses.stacked_sums(module, p, b, cfg.model.graph_cutoff, cfg.huber_delta))
        ema = jax.jit(lambda e, p, d: jax.tree.map(lambda a, b: d * a + (1 - d) * b, e, p))
        predict = jax.jit(jax.vmap(lambda p, b: losses.predict(module, p, b, cfg.model.graph_cutoff),
                                   in_axes=(None, 0)))
        energies = jax.jit(jax.vmap(lambda p, b: losses.predict_energy(module, p, b, cfg.model.graph_cutoff),
                                    in_axes=(None, 0)))
        _JITTED[key] = (make_train_step(module, optimizer, cfg), evaluate, ema, predict, energies)
    return _JITTED[key]


def fit_statistics(cfg, train_graphs, elements, keep_degree_table: bool = False):
    """A new config with the model's statistics fitted on the training graphs: the
    element list and the average-degree table k(r) (a fine-tuned model keeps its own
    table with keep_degree_table). The caller's config is not changed."""
    from facet import graph as fgraph

    model = dataclasses.replace(cfg.model, elements=tuple(elements))
    if not (keep_degree_table and model.degree_radii):
        radii, values = fgraph.degree_table(train_graphs, cfg.training_graph_cutoff)
        model = dataclasses.replace(model, degree_radii=radii, degree_values=values)
    return dataclasses.replace(cfg, model=model)


# ---------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------


# The final species-shift refit uses training structures up to this many atoms: it fits
# one number per element (liquid water: 85 of 280 frames, with per-frame residuals of about
# 0.8 meV/atom RMS, put its standard error near 0.09 meV/atom), so more only costs time (all
# 280 frames took 61 s of a 20-minute water run).
REFIT_MAX_ATOMS = 16384


def species_shift_correction(counts: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Per-species energies delta minimising sum_g ((residual_g - counts_g . delta) / n_g)^2,
    per atom as the loss and the MAE count energy errors; the minimum-norm one when the
    compositions do not determine it (one composition: only the total per structure is
    fixed, spread over the species in proportion to their counts)."""
    counts = np.asarray(counts, float)
    n_atoms = counts.sum(axis=1, keepdims=True)
    delta, *_ = np.linalg.lstsq(counts / n_atoms, np.asarray(residuals, float) / n_atoms[:, 0], rcond=None)
    return delta


def fit_readout(graphs, elements):
    """Species shifts by least squares of energy on composition; global scale from force RMS."""
    counts = np.zeros((len(graphs), len(elements)))
    energies = np.zeros(len(graphs))
    forces = []
    for k, g in enumerate(graphs):
        counts[k] = np.bincount(g.species, minlength=len(elements))
        energies[k] = g.energy
        if g.forces is not None:
            forces.append(np.asarray(g.forces).ravel())
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    residual = (energies - counts @ shift) / counts.sum(axis=1)
    force_rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else 0.0
    scale = force_rms if force_rms > 1e-6 else max(float(np.std(residual)), 1e-3)
    return shift, scale


@dataclass
class Datasets:
    train: list
    valid: list
    test: list
    elements: tuple[str, ...]
    summary: dict


def prepare_data(paths, cfg, split_indices=None, elements=None, log=print) -> Datasets:
    from facet import data as fdata
    from facet import graph as fgraph

    structures = []
    for path in paths:
        structures.extend(fdata.read_structures(path, require_forces=True))
    if not structures:
        raise fdata.DataError(f"no structures in {', '.join(map(str, paths))}")
    kept, removed = fdata.filter_outliers(structures, max_energy_per_atom=cfg.max_energy_per_atom,
                                          max_abs_force=cfg.max_abs_force)
    log(f"data: {len(structures)} structures from {', '.join(map(str, paths))}; outlier filter "
        f"(energy/atom > {cfg.max_energy_per_atom} eV, |force| > {cfg.max_abs_force} eV/Å) removed {len(removed)}")
    if not kept:
        raise fdata.DataError("every structure was removed by the outlier filter; "
                              "loosen max_abs_force / max_energy_per_atom")
    data_elements = tuple(fdata.element_list(kept))
    if elements is None:
        elements = data_elements
    else:
        missing = sorted(set(data_elements) - set(elements))
        if missing:
            raise fdata.DataError(f"the data contains elements {missing} that the initial model "
                                  f"(elements {list(elements)}) does not know")
    if split_indices:
        parts = fdata.load_split_indices(split_indices, len(kept))
        train_s, valid_s, test_s = ([kept[i] for i in idx] for idx in parts)
    else:
        train_s, valid_s, test_s = fdata.split_structures(kept, cfg.split_ratios, seed=cfg.seed)
    log(f"split (group-aware, seed {cfg.seed}): train {len(train_s)}, valid {len(valid_s)}, test {len(test_s)}")
    if not train_s or not valid_s:
        raise fdata.DataError(f"too few structures ({len(kept)}) for a train/valid split; need at least a few groups")
    species_index = fgraph.species_index(elements)
    cutoff = cfg.training_graph_cutoff
    build = lambda ss: [fgraph.build_graph(s, cutoff, species_index) for s in ss]  # noqa: E731
    t0 = time.time()
    train_g, valid_g, test_g = build(train_s), build(valid_s), build(test_s)
    log(f"graphs: built in {time.time() - t0:.1f} s (cutoff {cutoff} Å)")
    summary = {
        "files": [Path(p).name for p in paths],
        "structures": len(structures), "removed_outliers": len(removed),
        "train": len(train_s), "valid": len(valid_s), "test": len(test_s),
        "atoms_train": int(sum(len(g.species) for g in train_g)),
        "elements": list(elements),
    }
    return Datasets(train_g, valid_g, test_g, tuple(elements), summary)


# ---------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg, data: Datasets, out: Path, init_params=None, log=print, progress=True,
                 statistics_graphs=None):
        """statistics_graphs: the graphs the statistics (degree table, readout, the training
        batches' padded shape) are fitted on, by default data.train (a bootstrap committee
        member fits them on the full set, so that every member shares them; fine-tuning
        rounds pass the original training set, so that they share one compiled shape)."""
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        from facet import graph as fgraph
        from facet import model

        self.cfg, self.data, self.out, self.log, self.progress = cfg, data, Path(out), log, progress
        devices = jax.local_devices()
        num_devices = cfg.num_devices or len(devices)
        if cfg.batch_size % num_devices:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {num_devices} devices")
        self.num_devices = num_devices
        self.mesh = Mesh(np.array(devices[:num_devices]), ("data",))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

        # The fitted statistics go into a new config (the caller's is not changed).
        stats = data.train if statistics_graphs is None else statistics_graphs
        cfg = self.cfg = fit_statistics(cfg, stats, data.elements, keep_degree_table=init_params is not None)
        self.module = model.Facet(cfg.model)
        if init_params is None:
            params = model.init(self.module, jax.random.key(cfg.seed))
            shift, scale = fit_readout(stats, data.elements)
            params = model.set_readout(params, shift, scale)
            log(f"readout init: species shifts {dict(zip(data.elements, np.round(shift, 4)))} eV, "
                f"global scale {scale:.4f}")
        else:
            params = init_params
        self.num_params = model.count_parameters(params)
        log(f"model: {self.num_params:,} parameters, {cfg.model.num_layers} message-passing layers, "
            f"hidden {cfg.model.hidden_irreps}, devices {num_devices}")

        budget = cfg.batch_budget if cfg.batching == "budget" else None
        loader = lambda graphs, shuffle, budget_graphs=None: fgraph.BatchLoader(  # noqa: E731
            graphs, cfg.batch_size, shuffle=shuffle, seed=cfg.seed, num_devices=num_devices,
            max_shapes=cfg.max_batch_shapes, budget=budget, budget_graphs=budget_graphs)
        self.train_loader = loader(data.train, True, statistics_graphs)
        self.valid_loader = loader(data.valid, False)
        self.test_loader = loader(data.test, False) if data.test else None

        self.optimizer = create_optimizer(cfg, params)
        self.params = jax.device_put(params, self.replicated)
        self.ema_params = self.params
        self.opt_state = jax.device_put(self.optimizer.init(self.params), self.replicated)
        self.step = 0
        self.best = math.inf
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self.validation_s = 0.0  # duration of the last validation pass: reserved at the end of a timed run
        self._compile_shapes = set()

        self._update, self._eval, self._ema, self._predict, self._energies = jitted_functions(
            cfg, self.module, self.optimizer)
        self.refit_s = 0.0  # duration of the species-shift refit: reserved at the end of a timed run
        # atoms the refit reads per atom a validation pass reads (fixed: the estimate runs every step)
        self._refit_atoms_ratio = (min(sum(g.n_atoms for g in data.train), REFIT_MAX_ATOMS)
                                   / max(sum(g.n_atoms for g in data.valid), 1))

    def ema_decay(self) -> float:
        """The configured decay, warmed up as (1+n)/(10+n) over the first EMA updates,
        so that a short run's EMA is not dominated by the initial parameters."""
        n = self.step // self.cfg.ema_every
        return min(self.cfg.ema_decay, (1.0 + n) / (10.0 + n))

    def training_state(self) -> dict:
        """What the optimiser is doing, for the log: the effective step size, r_max and
        the norm of each block's layer scale (all blocks start at layer_scale_init)."""
        import jax

        from facet import model

        step_size = self.cfg.learning_rate
        states = [s for s in jax.tree.leaves(self.opt_state, is_leaf=is_injected) if is_injected(s)]
        if states:
            step_size *= float(states[0].hyperparams["learning_rate"])
            prodigy_d = getattr(states[0].inner_state, "estim_lr", None)
            if prodigy_d is not None:  # Prodigy's own step-size estimate
                step_size *= float(prodigy_d)
        inner = self.params["params"]
        scales = {name: float(np.linalg.norm(np.asarray(block["norm"]["layer_scale"])))
                  for name, block in inner.items() if name.endswith("_residual")}
        return {"step_size": step_size, "r_max": model.cutoff(self.params, self.cfg.model),
                "layer_scale_norms": scales}

    def update_ema(self):
        self.ema_params = self._ema(self.ema_params, self.params, self.ema_decay())

    # -- checkpoints -------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def info(self, extra=None) -> dict:
        info = {"data": self.data.summary, "num_params": self.num_params, "step": self.step,
                "best_valid": self.best, "elapsed_s": self.elapsed()}
        info.update(extra or {})
        return info

    def save(self, name: str, extra=None):
        from facet import checkpoint

        checkpoint.save(self.ckpt_dir / f"{name}.ckpt", config=self.cfg, step=self.step, params=self.params,
                        ema_params=self.ema_params, opt_state=self.opt_state, info=self.info(extra))

    def restore(self, path: Path):
        import jax

        from facet import checkpoint

        payload = checkpoint.load(path)
        self.params = jax.device_put(payload["params"], self.replicated)
        self.ema_params = jax.device_put(payload["ema_params"], self.replicated)
        self.opt_state = jax.device_put(checkpoint.restore_opt_state(self.opt_state, payload["opt_state"]),
                                        self.replicated)
        self.step = payload["step"]
        self.best = payload["info"].get("best_valid", math.inf)
        self.elapsed_before = payload["info"].get("elapsed_s", 0.0)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self._t0 if hasattr(self, "_t0") else 0.0)

    # -- evaluation ----------------------------------------------------------
    def evaluate(self, loader, params=None) -> dict:
        import jax

        params = self.ema_params if params is None else params
        total = None
        for batch in loader.epoch(0):
            sums = jax.device_get(self._eval(params, self._put(batch)))
            total = sums if total is None else {k: total[k] + sums[k] for k in total}
        return losses.metrics_from_sums(total)

    def _put(self, batch):
        """Stack to (devices, ...), cast floats to the model dtype, shard over devices."""
        import jax

        if batch.species.ndim == 1:
            batch = jax.tree.map(lambda x: x[None], batch)
        dtype = np.dtype(self.cfg.model.dtype)
        batch = type(batch)(*(x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x for x in batch))
        self._compile_shapes.add((batch.species.shape, batch.senders.shape))
        return jax.device_put(batch, self.batch_sharding)

    # -- main loop -------------------------------------------------------------
    def run(self, max_steps: int, max_minutes: float = 0.0, started_at: float | None = None):
        """Train until max_steps or max_minutes. The clock starts at started_at (the CLI passes
        its launch time, so start-up and data loading count) and the run stops early enough for
        the final validation, timed from the last one, to end within the budget."""
        import jax
        from tqdm import tqdm

        cfg = self.cfg
        metrics_path = self.out / "metrics.jsonl"
        self._t0 = time.time() if started_at is None else started_at
        last_ckpt = last_eval = time.time()
        bad_in_a_row = 0
        # A time-limited run shows progress in seconds of its budget, else in steps.
        by_time = bool(max_minutes) and max_steps >= 10**9
        bar = tqdm(total=round(60 * max_minutes) if by_time else max_steps,
                   initial=round(self.elapsed()) if by_time else self.step,
                   disable=not self.progress, dynamic_ncols=True, unit="s" if by_time else "step",
                   file=sys.stdout, mininterval=1.0)
        atoms_seen = structures_seen = 0
        window_t0 = time.time()
        step_s = 0.0  # recent seconds per step (logging windows)

        def training_seconds():  # the budget less the final refit's and validation's expected durations
            return max(60 * max_minutes - self.validation_s - self.expected_refit_s(), 1.0)

        def progress_fraction():
            by_steps = self.step / max(max_steps, 1)
            by_time = self.elapsed() / training_seconds() if max_minutes else 0.0
            return min(max(by_steps, by_time), 1.0)

        epoch, skip = self.train_loader.locate(self.step)  # a resumed run continues mid-epoch
        done = False
        stop_reason = "max steps"
        pending = []  # (step, finite flag) not yet read back: reading it each step would sync host and device

        def check_finite():
            nonlocal bad_in_a_row
            for step, flag in zip([s for s, _ in pending], jax.device_get([f for _, f in pending])):
                if bool(flag):
                    bad_in_a_row = 0
                    continue
                bad_in_a_row += 1
                self.log(f"step {step}: non-finite loss or gradient; update skipped ({bad_in_a_row} in a row)")
                if bad_in_a_row >= 10:
                    raise FloatingPointError(
                        "10 consecutive non-finite steps: training diverged. Check the data for "
                        "overlapping atoms or huge forces, lower force_weight, or restart from "
                        f"{self.ckpt_dir / 'best.ckpt'}")
            pending.clear()

        while not done:
            for k, batch in enumerate(self.train_loader.epoch(epoch)):
                if k < skip:
                    continue
                frac = progress_fraction()
                lr = learning_rate_scale(cfg, self.step, frac)
                # The final stage (MACE's recipe) weights the energy more for the last part of the run.
                final = cfg.final_stage_fraction and frac >= 1.0 - cfg.final_stage_fraction
                energy_weight = cfg.final_stage_energy_weight if final else cfg.energy_weight
                self.params, self.opt_state, loss, sums, finite = self._update(
                    self.params, self.opt_state, self._put(batch), lr, np.float32(energy_weight))
                self.step += 1
                pending.append((self.step, finite))
                if len(pending) >= 10:
                    check_finite()
                if self.step % cfg.ema_every == 0:
                    self.update_ema()
                atoms_seen += int(np.sum(batch.node_mask))
                structures_seen += int(np.sum(batch.graph_mask))
                if self.step % cfg.log_every == 0:
                    m = losses.metrics_from_sums(jax.device_get(sums))
                    dt = time.time() - window_t0
                    rec = {"step": self.step, "time_s": round(self.elapsed(), 2), "loss": float(loss),
                           "lr_scale": lr, "train_energy_mae_mev_atom": m["energy_mae_mev_atom"],
                           "train_force_mae_mev_A": m["force_mae_mev_A"],
                           "structures_per_s": structures_seen / dt, "atoms_per_s": atoms_seen / dt,
                           **self.training_state()}
                    append_jsonl(metrics_path, rec)
                    bar.set_postfix(loss=f"{float(loss):.4g}", E=f"{m['energy_mae_mev_atom']:.1f}",
                                    F=f"{m['force_mae_mev_A']:.0f}", sps=f"{rec['structures_per_s']:.1f}")
                    atoms_seen = structures_seen = 0
                    step_s = dt / cfg.log_every
                    window_t0 = time.time()
                if (time.time() - last_eval > 60 * cfg.eval_every_minutes if cfg.eval_every_minutes
                        else self.step % cfg.eval_every == 0):
                    self.validate(metrics_path)
                    last_eval = time.time()
                if time.time() - last_ckpt > 60 * cfg.checkpoint_every_minutes:
                    self.save("last")
                    last_ckpt = time.time()
                if by_time:
                    bar.n = min(round(self.elapsed()), bar.total)
                    bar.set_description(f"step {self.step}", refresh=False)
                    bar.refresh()
                else:
                    bar.update(1)
                if self.step >= max_steps:
                    done = True
                    break
                # Steps are dispatched ahead of the device: near the end, wait for the queued ones
                # so that the budget counts finished work (and the final validation starts in time).
                if max_minutes and self.elapsed() >= training_seconds() - 10 * step_s:
                    jax.block_until_ready(loss)
                    if self.elapsed() >= training_seconds():
                        done, stop_reason = True, "time limit"
                        break
            epoch += 1
            skip = 0
        bar.close()
        check_finite()
        # Finalise: EMA includes the latest parameters, the species shifts are refitted, one last validation.
        self.update_ema()
        if cfg.refit_species_shift:
            self.refit_species_shift(metrics_path)
        self.validate(metrics_path)
        self.save("last")
        self.log(f"stopped at step {self.step} ({stop_reason}) after {self.elapsed() / 60:.1f} min; "
                 f"{len(self._compile_shapes)} distinct batch shapes (train and evaluation, one compilation each)")

    def refit_structures(self) -> list:
        """The training structures the species shifts are refitted on: a seeded sample of
        REFIT_MAX_ATOMS atoms in all (every structure of a smaller set)."""
        graphs = self.data.train
        order = np.random.default_rng(self.cfg.seed).permutation(len(graphs))
        atoms = np.cumsum([graphs[k].n_atoms for k in order])
        keep = max(int(np.searchsorted(atoms, REFIT_MAX_ATOMS, side="right")), 1)
        return [graphs[k] for k in np.sort(order[:keep])]

    def expected_refit_s(self) -> float:
        """Seconds the final refit will take: measured once it has run, else a forward pass over its
        structures estimated from the last validation (about a third of a pass with forces) plus
        its compilation (about 7 s for Facet-Small on one core here; 10 s reserved)."""
        if not self.cfg.refit_species_shift or not self.validation_s:
            return 0.0
        if self.refit_s:
            return self.refit_s
        return self.validation_s * self._refit_atoms_ratio / 3 + 10.0

    def refit_species_shift(self, metrics_path=None) -> np.ndarray:
        """Add to the species shifts (EMA and live parameters) the least-squares fit of the
        training energies' residuals on composition. The shifts move slowly under the small
        energy weight, and a per-atom energy offset left by training costs a whole energy MAE
        of its size (liquid water: 1.6 meV/atom); the refit is exact for the offset and leaves
        forces unchanged. Returns the correction (eV per atom of each species)."""
        import jax

        from facet import graph as fgraph
        from facet import model

        t0 = time.time()
        num_species = len(self.data.elements)
        loader = fgraph.BatchLoader(self.refit_structures(), self.cfg.batch_size, shuffle=False,
                                    num_devices=self.num_devices, max_shapes=self.cfg.max_batch_shapes,
                                    budget=self.cfg.batch_budget if self.cfg.batching == "budget" else None)
        counts, residuals = [], []
        for batch in loader.epoch(0):
            predicted = np.asarray(jax.device_get(self._energies(self.ema_params, self._put(batch))))
            stacked = jax.tree.map(lambda x: x[None], batch) if batch.species.ndim == 1 else batch
            for k in range(stacked.species.shape[0]):
                b = jax.tree.map(lambda x, k=k: np.asarray(x[k]), stacked)
                per_graph = np.zeros((b.graph_mask.shape[0], num_species))
                np.add.at(per_graph, (b.node_graph[b.node_mask], b.species[b.node_mask]), 1.0)
                counts.append(per_graph[b.graph_mask])
                residuals.append((b.energy - predicted[k])[b.graph_mask])
        correction = species_shift_correction(np.concatenate(counts), np.concatenate(residuals))
        per_atom = float(np.mean(np.concatenate(residuals) / np.concatenate(counts).sum(axis=1)))

        def shifted(params):
            inner = params["params"]
            return model.set_readout(params, np.asarray(inner["species_shift"]) + correction,
                                     np.asarray(inner["global_scale"]))

        self.ema_params = jax.device_put(shifted(self.ema_params), self.replicated)
        self.params = jax.device_put(shifted(self.params), self.replicated)
        self.refit_s = time.time() - t0
        self.log(f"species shifts refitted on {len(loader.graphs)} training structures in {self.refit_s:.1f} s: "
                 f"mean energy residual {1e3 * per_atom:+.2f} meV/atom, correction "
                 f"{dict(zip(self.data.elements, np.round(1e3 * correction, 2)))} meV")
        if metrics_path is not None:
            append_jsonl(metrics_path, {"step": self.step, "time_s": round(self.elapsed(), 2),
                                        "refit_mean_residual_mev_atom": 1e3 * per_atom,
                                        "refit_correction_mev": (1e3 * correction).tolist(),
                                        "refit_s": round(self.refit_s, 2)})
        return correction

    def validate(self, metrics_path):
        t0 = time.time()
        m = self.evaluate(self.valid_loader)
        self.validation_s = time.time() - t0
        score = m["energy_mae_mev_atom"] + m["force_mae_mev_A"] + (m["stress_mae_mev_A3"] or 0.0)
        rec = {"step": self.step, "time_s": round(self.elapsed(), 2), "wall_s": round(time.time() - PROCESS_START, 2),
               "epoch": round(self.step / max(len(self.train_loader), 1), 3),
               **{f"valid_{k}": v for k, v in m.items()}}
        append_jsonl(metrics_path, rec)
        msg = (f"step {self.step}: valid energy MAE {m['energy_mae_mev_atom']:.2f} meV/atom, "
               f"force MAE {m['force_mae_mev_A']:.1f} meV/Å")
        if m["stress_mae_mev_A3"] is not None:
            msg += f", stress MAE {m['stress_mae_mev_A3']:.2f} meV/Å³"
        if score < self.best:
            self.best = score
            self.save("best", {"valid": m})
            msg += " (best)"
        self.log(msg)
        return m


def append_jsonl(path: Path, record: dict):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def plot_curves(metrics_path: Path, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if "valid_energy_mae_mev_atom" in r]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].semilogy([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set(xlabel="step", ylabel="training loss", title="Loss")
    for ax, key, label in [(axes[1], "energy_mae_mev_atom", "energy MAE (meV/atom)"),
                           (axes[2], "force_mae_mev_A", "force MAE (meV/Å)")]:
        ax.semilogy([r["step"] for r in train], [r[f"train_{key}"] for r in train], alpha=0.5, label="train batch")
        ax.semilogy([r["step"] for r in valid], [r[f"valid_{key}"] for r in valid], "o-", label="validation (EMA)")
        ax.set(xlabel="step", ylabel=label, title=label.split(" (")[0])
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_parity(trainer: Trainer, loader, png: Path, title: str) -> dict:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for batch in loader.epoch(0):
        stacked = trainer._put(batch)
        energy, forces, _ = jax.device_get(trainer._predict(trainer.ema_params, stacked))
        b = jax.device_get(stacked)  # (devices, ...) arrays
        gm, nm = b.graph_mask.ravel(), b.node_mask.ravel()
        n_atoms = np.maximum(b.n_atoms.ravel(), 1)
        e_ref.append((b.energy.ravel() / n_atoms)[gm])
        e_pred.append((energy.ravel() / n_atoms)[gm])
        f_ref.append(b.forces.reshape(-1, 3)[nm].ravel())
        f_pred.append(forces.reshape(-1, 3)[nm].ravel())
    e_ref, e_pred, f_ref, f_pred = map(np.concatenate, (e_ref, e_pred, f_ref, f_pred))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, ref, pred, unit, name in [(axes[0], e_ref, e_pred, "eV/atom", "Energy"),
                                      (axes[1], f_ref, f_pred, "eV/Å", "Force components")]:
        lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        mae = np.mean(np.abs(ref - pred)) * 1000
        ax.set(xlabel=f"reference ({unit})", ylabel=f"Facet ({unit})", title=f"{name}: MAE {mae:.1f} m{unit}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return {"energy_mae_mev_atom": float(np.mean(np.abs(e_ref - e_pred)) * 1000),
            "force_mae_mev_A": float(np.mean(np.abs(f_ref - f_pred)) * 1000)}


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    from facet.config import load_config, to_dict

    cfg = load_config(args.config, args.set)
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    if args.max_time is not None:
        cfg.max_time_minutes = args.max_time
        if args.max_steps is None:
            cfg.max_steps = 10**9
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.ensemble < 1:
        return exit_with(ConfigError(f"--ensemble must be at least 1, got {args.ensemble}"))
    if args.bootstrap and args.ensemble < 2:
        return exit_with(ConfigError("--bootstrap resamples the data of committee members: give --ensemble N, N >= 2"))
    try:
        return run_ensemble(cfg, args) if args.ensemble > 1 else run(cfg, args)
    except (FacetError, FileNotFoundError) as err:
        return exit_with(err)


def run_ensemble(cfg, args) -> int:
    """Train args.ensemble members into OUT/member_K (one after the other; a killed run resumes
    at the member it was training) and write their committee, OUT/committee.hlo."""
    from facet import committee

    out = Path(args.out)
    data = prepare_data(args.data, cfg, split_indices=args.split_indices)  # one split for every member
    paths = []
    for k in range(args.ensemble):
        member_args = argparse.Namespace(**{**vars(args), "out": str(out / f"member_{k}")})
        member_cfg = dataclasses.replace(cfg, seed=cfg.seed + k)
        print(f"== committee member {k + 1} of {args.ensemble} (seed {member_cfg.seed})")
        run(member_cfg, member_args, member=k, data=data)
        paths.append(out / f"member_{k}" / "checkpoints" / "last.ckpt")
    header = committee.export_committee(paths, out / "committee.hlo")
    print(f"committee of {header['committee']['members']} members: {out / 'committee.hlo'}")
    return 0


def run(cfg, args, member: int | None = None, data: Datasets | None = None, started_at: float | None = None) -> int:
    """One training run. A committee member (member = K) gets the committee's data; a
    bootstrap member resamples its training set. A --max-time budget counts from
    started_at: by default the launch, for a committee's later members their own start."""
    import jax

    from facet import checkpoint
    from facet.config import to_dict

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "checkpoints" / "last.ckpt"
    resume = last.exists()
    init_params = None
    elements = None
    if resume:
        payload = checkpoint.load(last)
        saved = payload["config"]
        # The architecture comes from the checkpoint; run limits from this command.
        cfg.model = saved.model
        print(f"resuming {out} from step {payload['step']} ({last})")
        elements = tuple(saved.model.elements)
        init_params = payload["params"]
    elif args.init_from:
        payload = checkpoint.load(args.init_from)
        cfg.model = payload["config"].model
        elements = tuple(cfg.model.elements)
        init_params = payload["ema_params"]
        print(f"fine-tuning from {args.init_from} (step {payload['step']})")
    if data is None:
        data = prepare_data(args.data, cfg, split_indices=args.split_indices, elements=elements)
    statistics_graphs = None
    if member is not None and getattr(args, "bootstrap", False):
        statistics_graphs = data.train  # every member shares the statistics of the whole set
        rng = np.random.default_rng(cfg.seed)
        data = dataclasses.replace(data, train=[data.train[i] for i in rng.integers(0, len(data.train),
                                                                                      len(data.train))])
    trainer = Trainer(cfg, data, out, init_params=init_params, progress=not args.no_progress,
                      statistics_graphs=statistics_graphs)
    (out / "config.json").write_text(json.dumps(to_dict(trainer.cfg), indent=2))
    if resume:
        trainer.restore(last)
    if trainer.step >= cfg.max_steps or (cfg.max_time_minutes and trainer.elapsed() >= 60 * cfg.max_time_minutes):
        print(f"run already complete at step {trainer.step}")
    else:
        if started_at is None:  # a committee member's budget starts with it (the first one's with the launch)
            started_at = PROCESS_START if not member else time.time()
        trainer.run(cfg.max_steps, cfg.max_time_minutes, started_at=started_at)
    plot_curves(out / "metrics.jsonl", out / "training_curves.png")
    summary = {"step": trainer.step, "num_params": trainer.num_params, "devices": jax.local_device_count(),
               "valid": trainer.evaluate(trainer.valid_loader)}
    parity_loader = trainer.test_loader or trainer.valid_loader
    summary["test"] = trainer.evaluate(parity_loader)
    plot_parity(trainer, parity_loader, out / "parity.png",
                f"{'test' if trainer.test_loader else 'validation'} set, step {trainer.step}")
    trainer.save("last", {"test": summary["test"], "valid": summary["valid"]})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    v, t = summary["valid"], summary["test"]
    print(f"validation: energy MAE {v['energy_mae_mev_atom']:.2f} meV/atom, force MAE {v['force_mae_mev_A']:.1f} meV/Å"
          + (f", stress MAE {v['stress_mae_mev_A3']:.2f} meV/Å³" if v["stress_mae_mev_A3"] is not None else ""))
    print(f"test:       energy MAE {t['energy_mae_mev_atom']:.2f} meV/atom, force MAE {t['force_mae_mev_A']:.1f} meV/Å"
          + (f", stress MAE {t['stress_mae_mev_A3']:.2f} meV/Å³" if t["stress_mae_mev_A3"] is not None else ""))
    print(f"outputs in {out}: checkpoints/, metrics.jsonl, training_curves.png, parity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
