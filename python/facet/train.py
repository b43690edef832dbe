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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Wall-clock origin for metrics: "wall_s" counts from process start (data
# loading, graph building and compilation included), "time_s" from the first step.
PROCESS_START = time.time()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m facet.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help="training data: extxyz/xyz, ASE .db or pyxtal_ff .json (repeatable)")
    p.add_argument("--out", help="run directory (created; an existing run there is resumed)")
    p.add_argument("--config", help="JSON config file (fields of facet.config.TrainConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set batch_size=16 --set model.hidden_irreps=32x0e+16x1o")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-time", type=float, metavar="MINUTES")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="fine-tune from the parameters of an earlier checkpoint")
    p.add_argument("--split-indices", metavar="FILE", help="use a stored train/valid/test split (JSON index file)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    args = p.parse_args(argv)
    if not args.print_config and (not args.data or not args.out):
        p.error("--data and --out are required")
    return args


# ---------------------------------------------------------------------------
# Loss and metrics (pure jax)
# ---------------------------------------------------------------------------


def predict(module, params, batch, graph_cutoff: float):
    """Energies (G,), forces (N,3), stress (G,3,3) of a padded GraphBatch."""
    import jax
    import jax.numpy as jnp

    from facet import model

    num_nodes = batch.species.shape[0]
    num_graphs = batch.cell.shape[0]
    edge_graph = batch.node_graph[batch.receivers]
    vectors = (batch.positions[batch.senders] - batch.positions[batch.receivers]
               + jnp.einsum("ei,eij->ej", batch.edge_shifts, batch.cell[edge_graph]))
    # Padding edges get a vector beyond the cutoff: the envelope zeroes them exactly.
    far = jnp.asarray([2.0 * graph_cutoff, 0.0, 0.0], vectors.dtype)
    vectors = jnp.where(batch.edge_mask[:, None], vectors, far)
    mask = batch.node_mask.astype(vectors.dtype)
    atom_energies, grads = model.energy_and_edge_gradients(
        module, params, vectors, batch.senders, batch.receivers, batch.species, mask)
    energy = jax.ops.segment_sum(atom_energies * mask, batch.node_graph, num_graphs)
    forces = (jax.ops.segment_sum(grads, batch.receivers, num_nodes)
              - jax.ops.segment_sum(grads, batch.senders, num_nodes))
    edge_virial = -jnp.einsum("ei,ej->eij", vectors, grads)
    virial = jax.ops.segment_sum(edge_virial, edge_graph, num_graphs)
    volume = jnp.abs(jnp.linalg.det(batch.cell))
    stress = -virial / jnp.where(volume > 0, volume, 1.0)[:, None, None]
    return energy, forces, stress


def error_sums(module, params, batch, cfg):
    """Sums of squared and absolute errors with their counts, so that losses and
    MAEs combine exactly over devices and batches (no mean of means)."""
    import jax.numpy as jnp

    energy, forces, stress = predict(module, params, batch, cfg.model.graph_cutoff)
    gmask = batch.graph_mask.astype(energy.dtype)
    n_atoms = jnp.maximum(batch.n_atoms, 1).astype(energy.dtype)
    de = (energy - batch.energy) / n_atoms * gmask
    fmask = (batch.node_mask & batch.has_forces[batch.node_graph]).astype(energy.dtype)[:, None]
    df = (forces - batch.forces) * fmask
    smask = (batch.graph_mask & batch.has_stress).astype(energy.dtype)[:, None, None]
    ds = (stress - batch.stress) * smask
    return {
        "e_sq": jnp.sum(de**2), "e_abs": jnp.sum(jnp.abs(de)), "e_n": jnp.sum(gmask),
        "f_sq": jnp.sum(df**2), "f_abs": jnp.sum(jnp.abs(df)), "f_n": 3 * jnp.sum(fmask),
        "s_sq": jnp.sum(ds**2), "s_abs": jnp.sum(jnp.abs(ds)), "s_n": 9 * jnp.sum(smask),
    }


def loss_from_sums(sums, cfg):
    import jax.numpy as jnp

    kind = "abs" if cfg.loss == "mae" else "sq"

    def mean(key):
        return sums[f"{key}_{kind}"] / jnp.maximum(sums[f"{key}_n"], 1.0)

    return cfg.energy_weight * mean("e") + cfg.force_weight * mean("f") + cfg.stress_weight * mean("s")


def stacked_sums(module, params, stacked_batch, cfg):
    """Error sums over a (devices, ...) stack of batches, summed over the stack."""
    import jax

    per_device = jax.vmap(lambda b: error_sums(module, params, b, cfg))(stacked_batch)
    return jax.tree.map(lambda x: x.sum(axis=0), per_device)


# ---------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------


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
        raise fdata.DataError("every structure was removed by the outlier filter; loosen max_abs_force / max_energy_per_atom")
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
    build = lambda ss: [fgraph.build_graph(s, cfg.model.graph_cutoff, species_index) for s in ss]  # noqa: E731
    t0 = time.time()
    train_g, valid_g, test_g = build(train_s), build(valid_s), build(test_s)
    log(f"graphs: built in {time.time() - t0:.1f} s (cutoff {cfg.model.graph_cutoff} Å)")
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
    def __init__(self, cfg, data: Datasets, out: Path, init_params=None, log=print, progress=True):
        import jax
        import jax.numpy as jnp
        import optax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        from facet import graph as fgraph
        from facet import model

        self.cfg, self.data, self.out, self.log, self.progress = cfg, data, Path(out), log, progress
        devices = jax.local_devices()
        num_devices = cfg.num_devices or len(devices)
        if cfg.batch_size % num_devices:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {num_devices} devices")
        self.num_devices = num_devices
        self.mesh = Mesh(np.array(devices[:num_devices]), ("data",))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

        radii = np.round(np.arange(0.5, cfg.model.graph_cutoff + 1e-9, 0.25), 6)
        degrees = fgraph.average_degree_table(data.train, radii)
        if not (cfg.model.degree_radii and init_params is not None):
            # k(r) of this training set; a fine-tuned model keeps its own table.
            cfg.model = dataclasses.replace(
                cfg.model, degree_radii=tuple(float(r) for r in radii),
                degree_values=tuple(float(max(d, 1e-3)) for d in degrees))
        cfg.model = dataclasses.replace(cfg.model, elements=tuple(data.elements))
        self.module = model.build(cfg.model)
        if init_params is None:
            params = model.init(self.module, jax.random.key(cfg.seed))
            shift, scale = fit_readout(data.train, data.elements)
            params = model.set_readout(params, shift, scale)
            log(f"readout init: species shifts {dict(zip(data.elements, np.round(shift, 4)))} eV, global scale {scale:.4f}")
        else:
            params = init_params
        self.num_params = model.count_parameters(params)
        log(f"model: {self.num_params:,} parameters, {cfg.model.num_layers} message-passing layers, "
            f"hidden {cfg.model.hidden_irreps}, devices {num_devices}")

        loader = lambda graphs, shuffle: fgraph.BatchLoader(  # noqa: E731
            graphs, cfg.batch_size, shuffle=shuffle, seed=cfg.seed, num_devices=num_devices,
            max_shapes=cfg.max_batch_shapes)
        self.train_loader = loader(data.train, True)
        self.valid_loader = loader(data.valid, False)
        self.test_loader = loader(data.test, False) if data.test else None

        # Prodigy sets its own step size; we only scale it by warmup/decay, set
        # each step from the run's progress (steps or wall time, whichever is further).
        if cfg.optimizer == "prodigy":
            base = optax.inject_hyperparams(optax.contrib.prodigy)(
                learning_rate=cfg.learning_rate, betas=(0.9, 0.999), eps=cfg.prodigy_eps, estim_lr0=cfg.prodigy_d0,
                weight_decay=cfg.weight_decay, safeguard_warmup=True)
        elif cfg.optimizer == "adam":
            base = optax.inject_hyperparams(optax.adamw)(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'prodigy' or 'adam', got {cfg.optimizer!r}")
        self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), base)
        self.params = jax.device_put(params, self.replicated)
        self.ema_params = self.params
        self.opt_state = jax.device_put(self.optimizer.init(self.params), self.replicated)
        self.step = 0
        self.best = math.inf
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self._compile_shapes = set()

        module, optimizer = self.module, self.optimizer

        def update(params, opt_state, batch, lr):
            def loss_fn(p):
                sums = stacked_sums(module, p, batch, cfg)
                return loss_from_sums(sums, cfg), sums

            (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            injected = opt_state[1]
            opt_state = (opt_state[0], injected._replace(
                hyperparams={**injected.hyperparams, "learning_rate": jnp.asarray(lr * cfg.learning_rate, jnp.float32)}))
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
                [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            # A non-finite loss or gradient leaves parameters and optimiser untouched.
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            return keep(new_params, params), keep(new_opt_state, opt_state), loss, sums, finite

        self._update = jax.jit(update)
        self._eval = jax.jit(lambda p, b: stacked_sums(module, p, b, cfg))
        self._ema = jax.jit(lambda e, p, d: jax.tree.map(lambda a, b: d * a + (1 - d) * b, e, p))
        self._predict = jax.jit(jax.vmap(lambda p, b: predict(module, p, b, cfg.model.graph_cutoff), in_axes=(None, 0)))

    def ema_decay(self) -> float:
        """The configured decay, warmed up as (1+n)/(10+n) over the first EMA updates,
        so that a short run's EMA is not dominated by the initial parameters."""
        n = self.step // self.cfg.ema_every
        return min(self.cfg.ema_decay, (1.0 + n) / (10.0 + n))

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
        self.opt_state = jax.device_put(checkpoint.restore_opt_state(self.opt_state, payload["opt_state"]), self.replicated)
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
        return metrics_from_sums(total)

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
    def run(self, max_steps: int, max_minutes: float = 0.0):
        import jax
        from tqdm import tqdm

        cfg = self.cfg
        metrics_path = self.out / "metrics.jsonl"
        self._t0 = time.time()
        last_ckpt = time.time()
        bad_in_a_row = 0
        # A time-limited run shows progress in seconds of its budget, else in steps.
        by_time = bool(max_minutes) and max_steps >= 10**9
        bar = tqdm(total=round(60 * max_minutes) if by_time else max_steps,
                   initial=round(self.elapsed()) if by_time else self.step,
                   disable=not self.progress, dynamic_ncols=True, unit="s" if by_time else "step",
                   file=sys.stdout, mininterval=1.0)
        atoms_seen = structures_seen = 0
        window_t0 = time.time()

        def progress_fraction():
            by_steps = self.step / max(max_steps, 1)
            by_time = self.elapsed() / (60 * max_minutes) if max_minutes else 0.0
            return min(max(by_steps, by_time), 1.0)

        def schedule(frac):
            w = cfg.warmup_fraction
            return frac / w if frac < w else max(0.0, (1 - frac) / (1 - w))

        per_epoch = max(len(self.train_loader), 1)
        epoch, skip = divmod(self.step, per_epoch)  # a resumed run continues mid-epoch
        done = False
        stop_reason = "max steps"
        while not done:
            for k, batch in enumerate(self.train_loader.epoch(epoch)):
                if k < skip:
                    continue
                lr = max(schedule(progress_fraction()), 1e-3)
                self.params, self.opt_state, loss, sums, finite = self._update(
                    self.params, self.opt_state, self._put(batch), lr)
                self.step += 1
                finite = bool(finite)
                if not finite:
                    bad_in_a_row += 1
                    self.log(f"step {self.step}: non-finite loss or gradient; update skipped "
                             f"({bad_in_a_row} in a row)")
                    if bad_in_a_row >= 10:
                        raise FloatingPointError(
                            "10 consecutive non-finite steps: training diverged. Check the data for "
                            "overlapping atoms or huge forces, lower force_weight, or restart from "
                            f"{self.ckpt_dir / 'best.ckpt'}")
                    continue
                bad_in_a_row = 0
                if self.step % cfg.ema_every == 0:
                    self.update_ema()
                atoms_seen += int(np.sum(batch.node_mask))
                structures_seen += int(np.sum(batch.graph_mask))
                if self.step % cfg.log_every == 0:
                    m = metrics_from_sums(jax.device_get(sums))
                    dt = time.time() - window_t0
                    rec = {"step": self.step, "time_s": round(self.elapsed(), 2), "loss": float(loss),
                           "lr_scale": lr, "train_energy_mae_mev_atom": m["energy_mae_mev_atom"],
                           "train_force_mae_mev_A": m["force_mae_mev_A"],
                           "structures_per_s": structures_seen / dt, "atoms_per_s": atoms_seen / dt}
                    append_jsonl(metrics_path, rec)
                    bar.set_postfix(loss=f"{float(loss):.4g}", E=f"{m['energy_mae_mev_atom']:.1f}",
                                    F=f"{m['force_mae_mev_A']:.0f}", sps=f"{rec['structures_per_s']:.1f}")
                    atoms_seen = structures_seen = 0
                    window_t0 = time.time()
                if self.step % cfg.eval_every == 0:
                    self.validate(metrics_path)
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
                if max_minutes and self.elapsed() >= 60 * max_minutes:
                    done, stop_reason = True, "time limit"
                    break
            epoch += 1
            skip = 0
        bar.close()
        # Finalise: EMA includes the latest parameters, one last validation.
        self.update_ema()
        self.validate(metrics_path)
        self.save("last")
        self.log(f"stopped at step {self.step} ({stop_reason}) after {self.elapsed() / 60:.1f} min; "
                 f"{len(self._compile_shapes)} distinct batch shapes (train and evaluation, one compilation each)")

    def validate(self, metrics_path):
        m = self.evaluate(self.valid_loader)
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


def metrics_from_sums(s) -> dict:
    s = {k: float(v) for k, v in s.items()}

    def mae(key, factor):
        return s[f"{key}_abs"] / s[f"{key}_n"] * factor if s[f"{key}_n"] > 0 else None

    return {
        "energy_mae_mev_atom": mae("e", 1000.0),
        "energy_rmse_mev_atom": math.sqrt(s["e_sq"] / s["e_n"]) * 1000 if s["e_n"] else None,
        "force_mae_mev_A": mae("f", 1000.0),
        "force_rmse_mev_A": math.sqrt(s["f_sq"] / s["f_n"]) * 1000 if s["f_n"] else None,
        "stress_mae_mev_A3": mae("s", 1000.0),
    }


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
    try:
        return run(cfg, args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(cfg, args) -> int:
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
    data = prepare_data(args.data, cfg, split_indices=args.split_indices, elements=elements)
    trainer = Trainer(cfg, data, out, init_params=init_params, progress=not args.no_progress)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    if resume:
        trainer.restore(last)
    if trainer.step >= cfg.max_steps or (cfg.max_time_minutes and trainer.elapsed() >= 60 * cfg.max_time_minutes):
        print(f"run already complete at step {trainer.step}")
    else:
        trainer.run(cfg.max_steps, cfg.max_time_minutes)
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
