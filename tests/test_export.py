"""Exported model files reproduce the in-process model; the runtime's padding,
buckets, compilation counting and caching."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from facet import checkpoint, export, graph, model
from facet.calculator import FacetCalculator
from facet.config import TrainConfig
from facet.runtime import ModelRunner, assemble

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """conftest's session-wide tiny Facet (random weights, layer scales perturbed from 0)."""
    return tiny_model


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    cfg, _, params = tiny
    d = tmp_path_factory.mktemp("export")
    info = {"train_structures": 0, "note": "random weights"}
    # float32 exported for cpu and cuda: one file for both, runs on the CPU here.
    export.export_model(cfg, params, d / "f32.hlo", dtype="float32", platforms=("cpu", "cuda"), info=info,
                        stages=False)
    export.export_model(cfg, params, d / "f64.hlo", dtype="float64", info=info)
    return {"float32": d / "f32.hlo", "float64": d / "f64.hlo"}


def structure(kind="periodic"):
    if kind == "periodic":  # a small triclinic cell, smaller than the cutoff: many images
        atoms = bulk("Si", "diamond", a=3.9) * (2, 1, 1)
        atoms.numbers[[1, 2]] = 8
        atoms.cell[2] += [0.3, 0.1, 0.0]
    else:
        atoms = bulk("Si", "diamond", a=3.9, cubic=True)
        atoms.numbers[::3] = 8
        atoms.pbc = False
        atoms.cell[:] = 0.0
    atoms.rattle(0.15, seed=7)
    return atoms


# Every structure in this module fits one bucket, so each runner compiles once.
BUCKETS = {"min_atoms": 16, "min_edges": 256}  # -> (17, 256)


def graph_of(atoms, cutoff, elements):
    species = np.array([elements.index(s) for s in atoms.get_chemical_symbols()], np.int32)
    s, r, S = graph.neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    v = atoms.positions[s] - atoms.positions[r] + S @ atoms.cell.array
    return v, s, r, species


_inprocess_runners = {}


def inprocess(cfg, params, dtype, atoms, padded=True):
    """Energy, per-atom energies, forces, stress of the in-process model (no
    export), assembled as in export/README.md.  padded=True runs it through a
    ModelRunner with the same buckets as the file (same shapes, so the same
    float32 rounding); padded=False calls it unpadded under plain jit."""
    fn, _, _ = export.contract_function(cfg, params, dtype)
    v, s, r, species = graph_of(atoms, model.cutoff(params, cfg), cfg.elements)
    if padded:
        if dtype not in _inprocess_runners:
            header = export.model_header(cfg, params, dtype)
            _inprocess_runners[dtype] = ModelRunner((header, fn), buckets=BUCKETS)
        ae, g = _inprocess_runners[dtype](v, s, r, species, np.ones(len(atoms)))
    else:
        dt = np.dtype(dtype)
        with jax.enable_x64(dtype == "float64"):
            ae, g = jax.jit(fn)(v.astype(dt), s, r, species, np.ones(len(atoms), dt))
        ae, g = np.asarray(ae, np.float64), np.asarray(g, np.float64)
    forces, virial, _ = assemble(v, s, r, g, len(atoms))
    stress = -virial / atoms.get_volume() if atoms.pbc.all() else None
    return ae.sum(), ae, forces, stress


def scales(cfg, params, atoms):
    """Magnitudes of the terms summed into forces (max over atoms of
    sum_e |g_e| over the atom's edges) and stress (sum_e |r_e| |g_e| / V):
    float32 rounding is relative to these, not to the (smaller) sums."""
    fn, _, _ = export.contract_function(cfg, params, "float64")
    v, s, r, species = graph_of(atoms, model.cutoff(params, cfg), cfg.elements)
    with jax.enable_x64(True):
        _, g = jax.jit(fn)(v, s, r, species, np.ones(len(atoms)))
    gn = np.linalg.norm(np.asarray(g), axis=1)
    per_atom = np.bincount(s, gn, len(atoms)) + np.bincount(r, gn, len(atoms))
    volume = atoms.get_volume() if atoms.pbc.all() else 1.0
    return per_atom.max(), np.sum(np.linalg.norm(v, axis=1) * gn) / volume


def autodiff(cfg, module, params, atoms):
    """float64 reference by autodiff of the energy in positions and strain (no edge gradients)."""
    species = np.array([cfg.elements.index(x) for x in atoms.get_chemical_symbols()], np.int32)
    s, r, S = graph.neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff(params, cfg))
    cell = atoms.cell.array
    with jax.enable_x64(True):
        p64 = model.cast_params(params, jnp.float64)

        @jax.jit
        def energy_and_grads(positions, strain):
            def energy(positions, strain):
                deform = jnp.eye(3) + strain
                pos = positions @ deform
                vec = pos[s] - pos[r] + jnp.asarray(S, jnp.float64) @ (cell @ deform)
                return jnp.sum(module.apply(p64, vec, s, r, species))

            return jax.value_and_grad(energy, argnums=(0, 1))(positions, strain)

        e, (gp, ge) = energy_and_grads(jnp.asarray(atoms.positions), jnp.zeros((3, 3)))
        return float(e), -np.asarray(gp), (np.asarray(ge) / atoms.get_volume() if atoms.pbc.all() else None)


def rel(a, b, scale=None):
    """max |a - b| relative to max |b| (or to a given scale)."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b)) if scale is None else scale
    return float(np.max(np.abs(a - b)) / max(scale, 1e-300))


def voigt(sigma):
    return sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float64", 1e-12)])
@pytest.mark.parametrize("kind", ["periodic", "cluster"])
def test_file_reproduces_inprocess_model(tiny, files, dtype, tol, kind):
    """The file against the in-process model at the same padded shapes.

    float64: relative to the results.  float32: the exported and the in-process
    programs compile to slightly different kernels (atom energies agree
    bitwise, dE/dedge to a few ulp, 5e-7), so force and stress errors are
    measured relative to the terms they sum (see scales())."""
    cfg, _, params = tiny
    atoms = structure(kind)
    e_ref, ae_ref, f_ref, s_ref = inprocess(cfg, params, dtype, atoms)
    atoms.calc = file_calculator(files[dtype])
    f_scale, s_scale = scales(cfg, params, atoms) if dtype == "float32" else (None, None)
    assert rel(atoms.get_potential_energy(), e_ref) <= tol
    assert rel(atoms.get_potential_energies(), ae_ref) <= tol
    assert rel(atoms.get_forces(), f_ref, f_scale) <= tol
    if kind == "periodic":
        assert rel(atoms.get_stress(), voigt(0.5 * (s_ref + s_ref.T)), s_scale) <= tol
    assert np.abs(atoms.get_forces()).max() > 0.1  # the geometry matters
    assert atoms.calc.runner.num_compilations == 1


@pytest.mark.parametrize("dtype,tol", [("float32", 2e-5)])
def test_file_matches_unpadded_model(tiny, files, dtype, tol):
    """Padding changes float32 results only by rounding (summation order)."""
    cfg, _, params = tiny
    atoms = structure("periodic")
    e_ref, ae_ref, f_ref, s_ref = inprocess(cfg, params, dtype, atoms, padded=False)
    atoms.calc = file_calculator(files[dtype])
    assert rel(atoms.get_potential_energy(), e_ref) <= tol
    assert rel(atoms.get_forces(), f_ref) <= tol
    assert rel(atoms.get_stress(), voigt(0.5 * (s_ref + s_ref.T))) <= tol


def test_float64_file_matches_autodiff_forces_and_stress(tiny, files):
    """The whole chain (export, padding, edge gradients, assembly) against autodiff in positions/strain."""
    cfg, module, params = tiny
    atoms = structure("periodic")
    e_ref, f_ref, s_ref = autodiff(cfg, module, params, atoms)
    calc = file_calculator(files["float64"])
    atoms.calc = calc
    assert rel(atoms.get_potential_energy(), e_ref) <= 1e-12
    assert rel(atoms.get_forces(), f_ref) <= 1e-12
    assert rel(atoms.get_stress(), voigt(0.5 * (s_ref + s_ref.T))) <= 1e-12
    # The full (3, 3) virial of the README, W = -sum_e r_e (x) g_e, is -V dE/d(strain) with
    # positions deformed as x (I + strain).  It is not exactly symmetric: the S2 grid of the
    # mixer makes the model rotation invariant only up to grid aliasing.
    v, s, r, species = graph_of(atoms, calc.cutoff, cfg.elements)
    _, g = calc.runner(v, s, r, species, np.ones(len(atoms)))
    _, virial, per_atom = assemble(v, s, r, g, len(atoms))
    assert rel(-virial / atoms.get_volume(), s_ref) <= 1e-12
    assert rel(per_atom.sum(axis=0), virial) <= 1e-13


_calculators = {}


def file_calculator(path):
    """One calculator per file for the whole module (each new bucket compiles once)."""
    if path not in _calculators:
        _calculators[path] = FacetCalculator(path, buckets=BUCKETS)
    return _calculators[path]


def test_header_describes_the_model(tiny, files):
    cfg, _, params = tiny
    runner = file_calculator(files["float32"]).runner
    h = runner.header
    assert runner.elements == cfg.elements == tuple(h["elements"])
    assert runner.cutoff == pytest.approx(model.cutoff(params, cfg))
    assert runner.num_layers == cfg.num_layers and runner.dtype == "float32"
    assert h["platforms"] == ["cpu", "cuda"]
    assert h["parameter_count"] == model.count_parameters(params)
    assert h["training"]["note"] == "random weights"
    assert h["model_config"]["hidden_irreps"] == cfg.hidden_irreps
    assert h["shape_policy"]["kind"] == "symbolic" and h["inputs"][3]["shape"] == ["N"]


def test_file_carries_no_source_paths(files):
    """MLIR source locations would put the exporting machine's paths into a shared file."""
    data = Path(files["float32"]).read_bytes()
    repo = str(Path(model.__file__).resolve().parents[2]).encode()
    assert b"site-packages" not in data and repo not in data and b"model.py" not in data


def test_padding_never_changes_results(files):
    """Any bucket gives the same numbers (float64): padding atoms and edges are inert."""
    atoms = structure("periodic")
    calc = file_calculator(files["float64"])
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    big = ModelRunner(files["float64"], buckets={"min_atoms": 40, "min_edges": 1024})
    atoms.calc = FacetCalculator(big)
    assert abs(atoms.get_potential_energy() - e) <= 1e-12 * abs(e)
    assert big.shapes_seen == [(41, 1024)]
    assert rel(atoms.get_forces(), f) <= 1e-12


def test_export_cli_from_checkpoint(tiny, tmp_path, capsys):
    cfg, _, params = tiny
    ckpt = tmp_path / "ckpt.msgpack"
    checkpoint.save(ckpt, config=TrainConfig(model=cfg), step=10, params=params, ema_params=params,
                    info={"elements": list(cfg.elements), "val_energy_mae": 0.01})
    out = tmp_path / "model.hlo"
    assert export.main([str(ckpt), "-o", str(out), "--dtype", "float64"]) == 0
    text = capsys.readouterr().out
    assert "self-check:" in text and "(OK)" in text
    assert export.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "val_energy_mae: 0.01" in text and "float64" in text
    # the same checkpoint in process gives the same numbers as the file
    atoms = structure("periodic")
    atoms.calc = FacetCalculator.from_checkpoint(ckpt, dtype="float64")
    e1, f1 = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = file_calculator(out)
    assert rel(atoms.get_potential_energy(), e1) <= 1e-12 and rel(atoms.get_forces(), f1) <= 1e-12


def test_export_cli_errors(tmp_path, capsys):
    assert export.main([str(tmp_path / "missing.msgpack"), "-o", str(tmp_path / "m.hlo")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main([str(tmp_path / "x"), "-o", "m.hlo", "--platforms", "cpu,quantum"])
    assert "unknown platform" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dtype must be"):
        export.export_program(lambda *inputs: inputs, "float16")
