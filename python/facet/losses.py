"""Predictions, error sums, losses and metrics of padded batches, in pure jax.

Training (`facet.train`) and the SevenNet port's fine-tuning share them. Errors are
kept as sums with their counts, so that losses and MAEs combine exactly over devices
and batches (no mean of means).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from facet import model


def batch_edge_vectors(batch, graph_cutoff: float):
    """Edge vectors (E, 3) of a padded GraphBatch; padding edges get a vector beyond the
    cutoff, which the envelope zeroes exactly."""
    edge_graph = batch.node_graph[batch.receivers]
    vectors = (batch.positions[batch.senders] - batch.positions[batch.receivers]
               + jnp.einsum("ei,eij->ej", batch.edge_shifts, batch.cell[edge_graph]))
    far = jnp.asarray([2.0 * graph_cutoff, 0.0, 0.0], vectors.dtype)
    return jnp.where(batch.edge_mask[:, None], vectors, far)


def predict_energy(module, params, batch, graph_cutoff: float):
    """Energies (G,) of a padded GraphBatch, without the derivatives (a third of predict's cost)."""
    vectors = batch_edge_vectors(batch, graph_cutoff)
    atom_energies = module.apply(params, vectors, batch.senders, batch.receivers, batch.species)
    mask = batch.node_mask.astype(vectors.dtype)
    return jax.ops.segment_sum(atom_energies * mask, batch.node_graph, batch.cell.shape[0])


def predict(module, params, batch, graph_cutoff: float):
    """Energies (G,), forces (N, 3) and stress (G, 3, 3) of a padded GraphBatch."""
    num_nodes = batch.species.shape[0]
    num_graphs = batch.cell.shape[0]
    edge_graph = batch.node_graph[batch.receivers]
    vectors = batch_edge_vectors(batch, graph_cutoff)
    mask = batch.node_mask.astype(vectors.dtype)
    atom_energies, grads = model.energy_and_edge_gradients(
        module, params, vectors, batch.senders, batch.receivers, batch.species, mask)
    energy = jax.ops.segment_sum(atom_energies * mask, batch.node_graph, num_graphs)
    forces, virial = model.forces_and_virial(vectors, batch.senders, batch.receivers, grads, num_nodes,
                                             edge_graph, num_graphs)
    volume = jnp.abs(jnp.linalg.det(batch.cell))
    stress = -virial / jnp.where(volume > 0, volume, 1.0)[:, None, None]
    return energy, forces, stress


def error_sums(module, params, batch, graph_cutoff: float, huber_delta: float = 0.01) -> dict:
    """Sums of squared, absolute and Huber errors (energy per atom, force components, stress
    components), of each atom's force-error norm, and their counts."""
    energy, forces, stress = predict(module, params, batch, graph_cutoff)
    gmask = batch.graph_mask.astype(energy.dtype)
    n_atoms = jnp.maximum(batch.n_atoms, 1).astype(energy.dtype)
    de = (energy - batch.energy) / n_atoms * gmask
    atom_mask = (batch.node_mask & batch.has_forces[batch.node_graph]).astype(energy.dtype)
    fmask = atom_mask[:, None]
    df = (forces - batch.forces) * fmask
    smask = (batch.graph_mask & batch.has_stress).astype(energy.dtype)[:, None, None]
    ds = (stress - batch.stress) * smask
    # Each atom's force-error norm, with a safe gradient at zero error (masked atoms).
    df_sq = jnp.sum(df**2, axis=-1)
    df_norm = jnp.where(df_sq > 0, jnp.sqrt(jnp.where(df_sq > 0, df_sq, 1.0)), 0.0)

    def huber(x):
        return jnp.sum(optax.huber_loss(x, delta=huber_delta))

    return {
        "e_sq": jnp.sum(de**2), "e_abs": jnp.sum(jnp.abs(de)), "e_huber": huber(de), "e_n": jnp.sum(gmask),
        "f_sq": jnp.sum(df**2), "f_abs": jnp.sum(jnp.abs(df)), "f_huber": huber(df), "f_n": 3 * jnp.sum(fmask),
        "f_norm": jnp.sum(df_norm), "f_atoms": jnp.sum(atom_mask),
        "s_sq": jnp.sum(ds**2), "s_abs": jnp.sum(jnp.abs(ds)), "s_huber": huber(ds), "s_n": 9 * jnp.sum(smask),
    }


def stacked_sums(module, params, stacked_batch, graph_cutoff: float, huber_delta: float = 0.01) -> dict:
    """Error sums over a (devices, ...) stack of batches, summed over the stack."""
    per_device = jax.vmap(lambda b: error_sums(module, params, b, graph_cutoff, huber_delta))(stacked_batch)
    return jax.tree.map(lambda x: x.sum(axis=0), per_device)


def loss_from_sums(sums, cfg, energy_weight=None):
    """The loss cfg.loss ("mse", "mae", "l2mae": the per-atom force-norm MAE, "huber") weighted by
    cfg.energy_weight, cfg.force_weight and cfg.stress_weight (cfg: a TrainConfig or anything with
    those fields). energy_weight (may be traced) overrides cfg's, for the final energy-weighted stage."""
    kind = {"mse": "sq", "mae": "abs", "l2mae": "abs", "huber": "huber"}[cfg.loss]

    def mean(key, kind=kind, count="n"):
        return sums[f"{key}_{kind}"] / jnp.maximum(sums[f"{key}_{count}"], 1.0)

    force = mean("f", "norm", "atoms") if cfg.loss == "l2mae" else mean("f")
    energy_weight = cfg.energy_weight if energy_weight is None else energy_weight
    return energy_weight * mean("e") + cfg.force_weight * force + cfg.stress_weight * mean("s")


def metrics_from_sums(sums) -> dict:
    """MAEs and RMSEs in meV/atom, meV/Å and meV/Å³ (None where nothing was labelled)."""
    s = {k: float(v) for k, v in sums.items()}

    def mae(key, factor):
        return s[f"{key}_abs"] / s[f"{key}_n"] * factor if s[f"{key}_n"] > 0 else None

    return {
        "energy_mae_mev_atom": mae("e", 1000.0),
        "energy_rmse_mev_atom": math.sqrt(s["e_sq"] / s["e_n"]) * 1000 if s["e_n"] else None,
        "force_mae_mev_A": mae("f", 1000.0),
        "force_rmse_mev_A": math.sqrt(s["f_sq"] / s["f_n"]) * 1000 if s["f_n"] else None,
        "stress_mae_mev_A3": mae("s", 1000.0),
    }
