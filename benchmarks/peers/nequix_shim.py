"""Run Nequix's own trainer, `nequix.train.train(config)`, on CPU with jax 0.10.

    python benchmarks/peers/nequix_shim.py CONFIG.yml --run-dir DIR

Used by `train_peer.py nequix` (run it with the `.venv-peers` python). The nequix
0.4.5 wheel cannot train as installed here; this script patches only the
environment around the trainer, never the model, loss or optimiser:

* `wandb` / `wandb_osh` are not installed (the wheel is installed --no-deps): stub
  modules stand in. `wandb.run.dir` (where nequix writes `checkpoint.nqx` and
  `state.pkl`) is `--run-dir`; `wandb.log` is a no-op because nequix prints the
  same dictionaries to stdout, which the driver parses.
* `jax.device_put_replicated` was removed from jax: replaced by stacking each leaf
  once per device and placing it with the sharding jax's pmap gives its outputs
  (otherwise the training step is compiled twice).
* nequix's DataLoader starts 16 worker processes that busy-poll their queues, which
  on a 1-2 core budget steals the cores from training: graphs are built in the
  training process instead (the same `dataset[i]` calls, in the same order, still
  dynamically batched by jraph). Its dataset statistics use the same loader.
  Without workers, rebuilding every graph every epoch (LMDB read + neighbour list,
  ~4 ms a structure here) would cost ~20 s an epoch on one core, so each structure's
  graph is built once and kept in memory, as MACE and SevenNet do when they
  preprocess their data.
* Saved models must carry the dataset statistics in their config (`load_model`
  reads shift/scale/avg_n_neighbors from it), but `train()` only computes them when
  absent and does not store them: they are computed here first with nequix's own
  `average_atom_energies` / `dataset_stats` and written into the run's config.
  This is timed as part of the run, as it would be inside `train()`.
* Validation: nequix averages each batch's per-component force MAE weighted by the
  number of structures in the batch. The evaluation is wrapped to also report the
  force MAE over all components of all atoms (`force_mae_per_component`) and the
  number of atoms; nequix's own keys, its loss and so its best-model choice are
  unchanged.
* `save_model` writes through a temporary file and a rename, so a model file is
  never left half written when the driver stops the run at its time budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

T_START = time.time()


def _install_wandb_stub(run_dir: Path) -> None:
    run = types.SimpleNamespace(dir=str(run_dir), id="offline", summary={})
    wandb = types.ModuleType("wandb")

    def init(**kwargs):
        wandb.run = run
        return run

    wandb.init = init
    wandb.log = lambda *a, **k: None
    wandb.run = None
    sys.modules["wandb"] = wandb

    osh = types.ModuleType("wandb_osh")
    hooks = types.ModuleType("wandb_osh.hooks")

    class TriggerWandbSyncHook:  # only constructed when WANDB_MODE=offline
        def __call__(self):
            return None

    hooks.TriggerWandbSyncHook = TriggerWandbSyncHook
    osh.hooks = hooks
    sys.modules["wandb_osh"] = osh
    sys.modules["wandb_osh.hooks"] = hooks


def _replicate(tree, devices):
    """Stand-in for the removed jax.device_put_replicated: a leading device axis,
    sharded the way nequix's `filter_pmap(..., axis_name="device")` returns its outputs,
    so the training step is compiled once rather than again after the first step."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.array(devices), ("device",)), PartitionSpec("device"))
    n = len(devices)
    return jax.tree.map(lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * n), sharding), tree)


def _patch_loader(data_mod, train_mod) -> None:
    base = data_mod.DataLoader

    class InProcessLoader(base):
        """nequix's DataLoader with its worker processes replaced by direct calls."""

        def __init__(self, *args, **kwargs):
            kwargs["num_workers"] = 0
            super().__init__(*args, **kwargs)

        def _start_workers(self):
            self._started = True

        def make_generator(self):
            while self.idx < len(self.dataset):
                yield self.dataset[int(self.idxs[self.idx])]
                self.idx += 1

    data_mod.DataLoader = InProcessLoader
    train_mod.DataLoader = InProcessLoader


def _cache_graphs(data_mod) -> None:
    cls = data_mod.AseDBDataset
    build = cls._get_graph_dict
    cache: dict = {}

    def _get_graph_dict(self, idx):
        key = (str(self.file_path), self.cutoff, int(idx))
        if key not in cache:
            cache[key] = build(self, idx)
        return cache[key]

    cls._get_graph_dict = _get_graph_dict


def _patch_evaluate(train_mod) -> None:
    import jax.numpy as jnp
    import jraph

    def evaluate(model, dataloader, energy_weight=1.0, force_weight=1.0, stress_weight=1.0,
                 loss_type="huber"):
        sums: dict[str, float] = {}
        n_graphs_total = 0.0
        abs_force_sum = 0.0
        n_atoms_total = 0.0
        for batch in train_mod.prefetch(dataloader):
            n_graphs = float(jnp.sum(jraph.get_graph_padding_mask(batch)))
            n_atoms = float(jnp.sum(jraph.get_node_padding_mask(batch)))
            val_loss, metrics = train_mod.loss(
                model, batch, energy_weight, force_weight, stress_weight, loss_type
            )
            sums["loss"] = sums.get("loss", 0.0) + float(val_loss) * n_graphs
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n_graphs
            n_graphs_total += n_graphs
            # metrics["force_mae"] is the mean over this batch's 3 * n_atoms components
            abs_force_sum += float(metrics["force_mae"]) * 3.0 * n_atoms
            n_atoms_total += n_atoms
        out = {key: jnp.asarray(value / n_graphs_total) for key, value in sums.items()}
        out["force_mae_per_component"] = jnp.asarray(abs_force_sum / (3.0 * n_atoms_total))
        out["n_structures"] = jnp.asarray(n_graphs_total)
        out["n_atoms"] = jnp.asarray(n_atoms_total)
        return out

    train_mod.evaluate = evaluate


def _patch_atomic_save(train_mod) -> None:
    save = train_mod.save_model

    def save_model(path, model, config):
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save(tmp, model, config)
        os.replace(tmp, path)

    train_mod.save_model = save_model


STATS_KEYS = ["shift", "scale", "avg_n_neighbors", "max_n_edges", "max_n_nodes",
              "avg_n_nodes", "avg_n_edges"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--run-dir", required=True, help="where checkpoint.nqx / state.pkl go")
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    _install_wandb_stub(run_dir)
    import jax
    import yaml

    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = _replicate
    import nequix.data as data_mod
    import nequix.train as train_mod

    _patch_loader(data_mod, train_mod)
    _cache_graphs(data_mod)
    _patch_evaluate(train_mod)
    _patch_atomic_save(train_mod)

    with open(args.config) as f:
        config = yaml.safe_load(f)
    if "atom_energies" not in config or not all(k in config for k in STATS_KEYS):
        ds = data_mod.AseDBDataset(config["train_path"], config["atomic_numbers"],
                                   cutoff=config["cutoff"], backend="jax")
        if "atom_energies" not in config:
            e0 = data_mod.average_atom_energies(ds)
            config["atom_energies"] = {int(z): float(e) for z, e in
                                       zip(sorted(config["atomic_numbers"]), e0)}
        e0_list = [config["atom_energies"][z] for z in config["atomic_numbers"]]
        stats = data_mod.dataset_stats(ds, e0_list, num_workers=0)
        config.update(stats)
        for db in ds.dbs:  # train() opens the same LMDB files again
            db.close()
        del ds
    resolved = run_dir / "config_resolved.yml"
    with open(resolved, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    print(f"nequix_shim: statistics ready after {time.time() - T_START:.1f} s; "
          f"config {resolved}", flush=True)
    train_mod.train(str(resolved))


if __name__ == "__main__":
    main()
