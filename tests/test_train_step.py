"""The pure training step, its optimiser factory and schedule, tested one step at a time
against references computed independently (jax.grad of the loss, Adam's first step)."""

import dataclasses

import jax
import numpy as np
import pytest

from facet import buckets, losses, model, train
from facet import data as fdata
from facet import graph as fgraph
from facet.config import load_config

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10

TINY = [
    "model.hidden_irreps=8x0e+4x1o+4x2e", "model.embedding_channels=8", "model.scalar_channels=8",
    "model.scalar_mlp_hidden=8", "model.mixer_channels=4", "model.mixer_heads=2", "model.mixer_hidden=4",
    "model.graph_cutoff=4.0", "model.r_max_init=3.6", "batch_size=4", "model.dtype=float64",
    "model.layer_scale_init=0.5",
]


@pytest.fixture(scope="module")
def structures():
    return fdata.read_structures(fdata.default_dataset_path())[:24]


def setup(structures, extra=()):
    cfg = load_config(None, TINY + list(extra))
    graphs = [fgraph.build_graph(s, cfg.training_graph_cutoff, fgraph.species_index(("O", "Si")))
              for s in structures]
    cfg = train.fit_statistics(cfg, graphs, ("O", "Si"))
    module = model.Facet(cfg.model)
    params = model.cast_params(model.init(module, jax.random.key(0)), np.float64)
    loader = fgraph.BatchLoader(graphs, 4, shuffle=False, budget=1.1)
    batch = jax.tree.map(lambda x: x[None], next(loader.epoch(0)))
    return cfg, module, params, batch


def test_fit_statistics_returns_a_new_config(structures):
    cfg = load_config(None, TINY)
    graphs = [fgraph.build_graph(s, 4.0, fgraph.species_index(("O", "Si"))) for s in structures]
    fitted = train.fit_statistics(cfg, graphs, ("O", "Si"))
    assert cfg.model.degree_radii == () and cfg.model.elements == ()  # the caller's config is untouched
    assert fitted.model.elements == ("O", "Si")
    # The table reaches the training graph's cutoff (r_max_init when r_max is fixed, as by default).
    assert cfg.training_graph_cutoff - 0.25 < fitted.model.degree_radii[-1] <= cfg.training_graph_cutoff
    lengths = np.concatenate([np.linalg.norm(g.edge_vectors(), axis=1) for g in graphs])
    k3 = np.sum(lengths < 3.0) / sum(g.n_atoms for g in graphs)
    assert fitted.model.degree_values[list(fitted.model.degree_radii).index(3.0)] == pytest.approx(k3)


def test_one_adam_step_moves_each_parameter_by_the_step_size(structures):
    """Adam's first step is -lr * g / (|g| + eps): every parameter moves by the scheduled
    step size against its gradient's sign; statistics move at their factor; a frozen
    r_max does not move."""
    cfg, module, params, batch = setup(structures, ["optimizer=adam", "learning_rate=0.01", "weight_decay=0",
                                                    "grad_clip_norm=1e9", "statistics_learning_rate_factor=0.1",
                                                    "train_r_max=false"])
    optimizer = train.create_optimizer(cfg, params)
    step = train.make_train_step(module, optimizer, cfg)
    new, _, loss, _, finite = step(params, optimizer.init(params), batch, 0.5)
    assert bool(finite)
    def reference(p):
        sums = losses.stacked_sums(module, p, batch, cfg.model.graph_cutoff, cfg.huber_delta)
        return losses.loss_from_sums(sums, cfg)

    # jitted: op by op the float64 gradient compiles hundreds of small programs (about a minute)
    grads = jax.jit(jax.grad(reference))(params)
    reference_loss = jax.jit(reference)(params)
    assert float(loss) == pytest.approx(float(reference_loss), rel=1e-12)
    groups = train.parameter_groups(params, cfg)
    checked = set()
    for (path, g), old, moved, group in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(params),
                                            jax.tree.leaves(new), jax.tree.leaves(groups)):
        g, delta = np.asarray(g), np.asarray(moved) - np.asarray(old)
        lr = {"features": 0.01 * 0.5, "statistics": 0.001 * 0.5, "frozen": 0.0}[group]
        # Adam's first step, bias-corrected: m = g, v = g^2, so the update is lr * g / (|g| + eps).
        np.testing.assert_allclose(delta, -lr * g / (np.abs(g) + 1e-8), rtol=1e-6, atol=1e-12,
                                   err_msg=jax.tree_util.keystr(path))
        checked.add(group)
    assert checked == {"features", "statistics", "frozen"}


@pytest.mark.allow_nans
def test_non_finite_step_changes_nothing(structures):
    cfg, module, params, batch = setup(structures, ["optimizer=muon", "learning_rate=0.01"])
    optimizer = train.create_optimizer(cfg, params)
    step = train.make_train_step(module, optimizer, cfg)
    bad = batch._replace(energy=np.where(batch.graph_mask, np.nan, 0.0))
    state = optimizer.init(params)
    new, new_state, loss, _, finite = step(params, state, bad, 1.0)
    assert not bool(finite)
    for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((new, new_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_schedule_warms_up_in_steps_then_decays():
    cfg = load_config(None, ["warmup_steps=10", "warmup_start=0.2", "decay=cosine"])
    assert train.learning_rate_scale(cfg, 0, 0.0) == pytest.approx(0.2 + 0.8 * 0.1)
    assert train.learning_rate_scale(cfg, 9, 0.0) == pytest.approx(1.0)
    assert train.learning_rate_scale(cfg, 100, 0.5) == pytest.approx(0.5)
    assert train.learning_rate_scale(cfg, 100, 1.0) == pytest.approx(0.0)
    linear = dataclasses.replace(cfg, decay="linear")
    assert train.learning_rate_scale(linear, 100, 0.25) == pytest.approx(0.75)


def test_fixed_r_max_graph_is_exact(structures):
    """With r_max fixed, training on a graph cut at r_max gives the energies and forces
    of the full graph_cutoff graph: the envelope zeroes every edge beyond r_max."""
    cfg, module, params, _ = setup(structures, ["train_r_max=false", "model.r_max_init=3.0"])
    assert cfg.training_graph_cutoff == 3.0
    index = fgraph.species_index(("O", "Si"))
    graphs = {c: [fgraph.build_graph(s, c, index) for s in structures[:4]] for c in (3.0, 4.0)}
    # One padded shape for all of them, so the prediction compiles once.
    shape = buckets.padded_sizes(max(g.n_atoms for g in graphs[4.0]), max(g.n_edges for g in graphs[4.0]))
    predict = jax.jit(jax.vmap(lambda b: losses.predict(module, params, b, 4.0)))
    for k in range(4):
        results = []
        for cutoff in (3.0, 4.0):
            g = graphs[cutoff][k]
            energy, forces, _ = predict(jax.tree.map(lambda x: x[None], fgraph.batch_graphs([g], *shape, 2)))
            results.append((float(energy[0, 0]), np.asarray(forces[0, :g.n_atoms])))
        assert results[0][0] == pytest.approx(results[1][0], abs=1e-10)
        np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-10)


def test_jitted_functions_are_shared_by_runs_of_one_program():
    """Committee members and fine-tuning runs differ in seed and limits only: they share one
    compilation; anything that enters the program (here a loss weight) gets its own."""
    from facet.config import TrainConfig

    cfg = TrainConfig()
    module = model.Facet(cfg.model)
    first = train.jitted_functions(cfg, module, None)
    again = train.jitted_functions(dataclasses.replace(cfg, seed=3, max_steps=7, max_time_minutes=1.5), module, None)
    assert all(a is b for a, b in zip(first, again))
    other = train.jitted_functions(dataclasses.replace(cfg, force_weight=cfg.force_weight + 1), module, None)
    assert all(a is not b for a, b in zip(first, other))
