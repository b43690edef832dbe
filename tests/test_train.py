"""Training: losses over devices, NaN handling, config overrides, CLI errors,
resume after SIGKILL, and a short run that lowers the validation error."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from facet import data as fdata
from facet import graph as fgraph
from facet import losses, model, train
from facet.config import TrainConfig, apply_override, load_config

TINY = [
    "model.hidden_irreps=8x0e+4x1o+4x2e", "model.embedding_channels=8", "model.scalar_channels=8",
    "model.scalar_mlp_hidden=8", "model.mixer_channels=4", "model.mixer_heads=2", "model.mixer_hidden=4",
    "model.graph_cutoff=4.0", "model.r_max_init=3.6", "max_batch_shapes=1", "batch_size=4",
]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """120 structures (8 trajectories) of the bundled SiO2 data."""
    structures = fdata.read_structures(fdata.default_dataset_path())
    groups = sorted({s.group for s in structures})[:8]
    subset = [s for s in structures if s.group in groups]
    path = tmp_path_factory.mktemp("data") / "small.extxyz"
    from ase.io import write

    write(path, [s.to_atoms() for s in subset], format="extxyz")
    return path


def make_trainer(path, tmp_path, extra=()):
    cfg = load_config(None, TINY + list(extra))
    data = train.prepare_data([path], cfg, log=lambda *a: None)
    return train.Trainer(cfg, data, tmp_path, progress=False, log=lambda *a: None)


def test_overrides_are_typed_and_checked():
    cfg = apply_override(TrainConfig(), "model.hidden_irreps=16x0e+8x1o")
    cfg = apply_override(cfg, "batch_size=16")
    cfg = apply_override(cfg, "r_max_init=4.5")  # model fields without the prefix
    assert cfg.batch_size == 16 and cfg.model.hidden_irreps == "16x0e+8x1o" and cfg.model.r_max_init == 4.5
    with pytest.raises(ValueError, match="unknown config field"):
        apply_override(cfg, "batchsize=3")
    with pytest.raises(ValueError, match="must be an integer"):
        apply_override(cfg, "batch_size=2.5")


def test_config_dicts_keep_fixed_length_tuples():
    """JSON turns tuples into lists; tuple[str, float] must come back as (str, float), not (str, str)."""
    import dataclasses
    import json

    from facet.config import from_dict

    @dataclasses.dataclass(frozen=True)
    class Pairs:
        constants: tuple[tuple[str, float], ...] = ()
        radii: tuple[float, ...] = ()

    back = from_dict(Pairs, json.loads(json.dumps(dataclasses.asdict(Pairs((("silu", 1.68),), (0.5, 1))))))
    assert back.constants == (("silu", 1.68),) and isinstance(back.constants[0][1], float)
    assert back.radii == (0.5, 1.0)
    with pytest.raises(ValueError, match="must have 2 items"):
        from_dict(Pairs, {"constants": [["silu", 1.0, 2.0]]})


@pytest.mark.float64
def test_two_devices_give_the_one_device_loss_and_gradient(small_data, tmp_path):
    assert jax.local_device_count() >= 2, "conftest forces 2 host devices"
    # float64 so that the comparison is not limited by float32 summation order.
    t1 = make_trainer(small_data, tmp_path / "a", ["num_devices=1", "model.dtype=float64"])
    t2 = make_trainer(small_data, tmp_path / "b", ["num_devices=2", "model.dtype=float64"])
    params = t1.params
    graphs = t1.data.train[:4]
    results = []
    for t, devices in ((t1, 1), (t2, 2)):
        loader = fgraph.BatchLoader(graphs, 4, shuffle=False, num_devices=devices)
        batch = t._put(next(loader.epoch(0)))
        assert batch.species.shape[0] == devices

        def loss(p, batch=batch, t=t):
            return losses.loss_from_sums(losses.stacked_sums(t.module, p, batch, t.cfg.model.graph_cutoff), t.cfg)

        value, grads = jax.jit(jax.value_and_grad(loss))(jax.device_put(params, t.replicated))
        results.append((float(value), grads))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-10)
    for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-8, atol=1e-12)


@pytest.mark.allow_nans
def test_non_finite_step_is_skipped(small_data, tmp_path):
    t = make_trainer(small_data, tmp_path)
    batch = next(t.train_loader.epoch(0))
    bad = batch._replace(energy=np.where(batch.graph_mask, np.nan, 0.0))
    before = jax.tree.map(np.asarray, t.params)
    params, opt_state, loss, _, finite = t._update(t.params, t.opt_state, t._put(bad), 1.0)
    assert not bool(finite) and not np.isfinite(float(loss))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(b), a)


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "facet.train", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("", "no structures"),
    ("2\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc=\"F F F\"\nSi 0 0 0\nSi 0 0\n", "line"),
    ("1\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc=\"F F F\"\nSi 0 0 0\n", "forces"),
])
def test_cli_reports_bad_data_clearly(tmp_path, content, message):
    path = tmp_path / "data.extxyz"
    if content is not None:
        path.write_text(content)
    result = run_cli("--data", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1")
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and message in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_short_training_lowers_validation_error(small_data, tmp_path):
    t = make_trainer(small_data, tmp_path, ["eval_every=1000", "ema_every=1", "ema_decay=0.5"])
    before = t.evaluate(t.valid_loader, t.params)
    t.run(max_steps=60)
    after = t.evaluate(t.valid_loader)
    print(f"valid force MAE {before['force_mae_mev_A']:.0f} -> {after['force_mae_mev_A']:.0f} meV/Å, "
          f"energy {before['energy_mae_mev_atom']:.1f} -> {after['energy_mae_mev_atom']:.1f} meV/atom")
    assert after["energy_mae_mev_atom"] < 0.8 * before["energy_mae_mev_atom"]
    assert after["force_mae_mev_A"] < before["force_mae_mev_A"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_force_mae_mev_A" in r for r in lines) and any("loss" in r for r in lines)


@pytest.mark.slow
def test_resume_after_sigkill(small_data, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(small_data), "--out", str(out), "--max-steps", "400", "--no-progress",
            *sum((["--set", s] for s in TINY + ["checkpoint_every_minutes=0.05", "eval_every=10000"]), [])]
    proc = subprocess.Popen([sys.executable, "-m", "facet.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and time.time() < deadline:
        time.sleep(1)
    time.sleep(5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from facet import checkpoint

    killed_at = checkpoint.load(last)["step"]
    assert 0 < killed_at < 400
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming {out} from step {killed_at}" in result.stdout
    assert checkpoint.load(last)["step"] == 400


def test_readout_initialisation_recovers_species_energies():
    """Least squares on composition recovers exact per-species energies; the
    global scale is the force RMS."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    true_shift = np.array([-10.5, -5.25])
    graphs = []
    for _ in range(20):
        species = rng.integers(0, 2, size=rng.integers(3, 12))
        forces = rng.normal(scale=2.0, size=(len(species), 3))
        graphs.append(SimpleNamespace(species=species, energy=float(true_shift[species].sum()), forces=forces))
    shift, scale = train.fit_readout(graphs, ("O", "Si"))
    np.testing.assert_allclose(shift, true_shift, atol=1e-10)
    rms = np.sqrt(np.mean(np.concatenate([g.forces.ravel() for g in graphs]) ** 2))
    assert scale == pytest.approx(rms)


def test_species_shift_correction_solves_least_squares_on_composition():
    """Varied compositions recover per-species energies; a single composition (liquid
    water) fixes only the total, spread over the species in proportion to their counts."""
    counts = np.array([[2.0, 1.0], [1.0, 3.0], [4.0, 0.0]])
    np.testing.assert_allclose(train.species_shift_correction(counts, counts @ [0.3, -0.2]), [0.3, -0.2],
                               atol=1e-12)
    water = np.array([[64.0, 128.0]] * 5)
    delta = train.species_shift_correction(water, np.full(5, 1.92))
    np.testing.assert_allclose(water @ delta, 1.92, rtol=1e-12)
    np.testing.assert_allclose(delta / np.linalg.norm(delta), water[0] / np.linalg.norm(water[0]), rtol=1e-12)


def test_species_shift_refit_removes_an_energy_offset_and_keeps_forces(small_data, tmp_path):
    """Shift the species energies of an untrained model by a known amount: the refit
    gives it back on every training structure's total energy, and forces do not move."""
    t = make_trainer(small_data, tmp_path)
    t.refit_species_shift()  # the offset of the untrained network itself
    before = t.evaluate(t.valid_loader)
    delta = np.array([0.05, -0.03])  # eV per atom of each element
    inner = t.ema_params["params"]
    t.ema_params = jax.device_put(
        model.set_readout(t.ema_params, np.asarray(inner["species_shift"]) + delta, np.asarray(inner["global_scale"])))
    shifted = t.evaluate(t.valid_loader)
    correction = t.refit_species_shift()
    after = t.evaluate(t.valid_loader)
    counts = np.array([np.bincount(g.species, minlength=2) for g in t.refit_structures()])
    # float32 shifts of ~-100 eV hold about 1e-5 eV each.
    np.testing.assert_allclose(counts @ (correction + delta), 0.0, atol=1e-3 * counts.sum(axis=1).max())
    assert shifted["energy_mae_mev_atom"] > before["energy_mae_mev_atom"] + 20.0
    assert after["energy_mae_mev_atom"] == pytest.approx(before["energy_mae_mev_atom"], abs=0.05)
    assert after["force_mae_mev_A"] == pytest.approx(before["force_mae_mev_A"], rel=1e-6)


def test_mae_loss_is_the_weighted_mean_absolute_error():
    import numpy as np

    from facet import losses
    from facet.config import load_config

    rng = np.random.default_rng(0)
    de, df = rng.normal(size=5), rng.normal(size=(7, 3))
    sums = {"e_sq": np.sum(de**2), "e_abs": np.sum(np.abs(de)), "e_n": 5.0,
            "f_sq": np.sum(df**2), "f_abs": np.sum(np.abs(df)), "f_n": 21.0,
            "s_sq": 0.0, "s_abs": 0.0, "s_n": 0.0}
    mae = load_config(None, ["loss=mae", "energy_weight=2", "force_weight=3"])
    mse = load_config(None, ["energy_weight=2", "force_weight=3"])
    assert float(losses.loss_from_sums(sums, mae)) == pytest.approx(2 * np.abs(de).mean() + 3 * np.abs(df).mean())
    assert float(losses.loss_from_sums(sums, mse)) == pytest.approx(2 * (de**2).mean() + 3 * (df**2).mean())
    # The final stage's energy weight replaces the configured one.
    assert float(losses.loss_from_sums(sums, mae, energy_weight=5.0)) == pytest.approx(
        5 * np.abs(de).mean() + 3 * np.abs(df).mean())
    # l2mae: each atom's force error is the norm of its error vector.
    sums_norm = {**sums, "f_norm": np.sum(np.linalg.norm(df, axis=1)), "f_atoms": 7.0}
    l2mae = load_config(None, ["loss=l2mae", "energy_weight=2", "force_weight=3"])
    assert float(losses.loss_from_sums(sums_norm, l2mae)) == pytest.approx(
        2 * np.abs(de).mean() + 3 * np.linalg.norm(df, axis=1).mean())
    with pytest.raises(ValueError, match="loss must be one of 'mse', 'mae', 'l2mae', 'huber', got 'hinge'"):
        load_config(None, ["loss=hinge"])


def test_ensemble_trains_members_on_one_split_and_writes_their_committee(small_data, tmp_path):
    """--ensemble 2 --bootstrap: two members with their own seeds, the committee file of both."""
    from facet import modelfile

    out = tmp_path / "committee"
    args = ["--data", str(small_data), "--out", str(out), "--max-steps", "3", "--no-progress", "--ensemble", "2",
            "--bootstrap", *sum((["--set", s] for s in TINY + ["eval_every=10000"]), [])]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    configs = [json.loads((out / f"member_{k}" / "config.json").read_text()) for k in range(2)]
    assert [c["seed"] for c in configs] == [0, 1]
    assert configs[0]["model"]["degree_values"] == configs[1]["model"]["degree_values"]  # shared statistics
    assert modelfile.read_header(out / "committee.hlo")["committee"]["members"] == 2
    assert run_cli("--data", str(small_data), "--out", str(tmp_path / "x"), "--bootstrap").returncode == 2
