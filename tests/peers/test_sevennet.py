"""facet_sevennet (the JAX port of SevenNet-0) against the original sevenn/torch model.

These tests need torch and sevenn, which the project's .venv does not have: run
them in the peer environment with ``make test-peers``
(``.venv-peers/bin/python -m pytest -q tests/peers``; the environment is
created by ``bash benchmarks/peers/setup_envs.sh``).  In the main suite they are
skipped at import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="needs torch + sevenn: run `make test-peers` (the .venv-peers environment)")
pytest.importorskip("sevenn", reason="needs sevenn: run `make test-peers` (the .venv-peers environment)")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

import facet_sevennet as sevennet  # noqa: E402
from facet_sevennet import export as sn_export  # noqa: E402
from facet_sevennet import model as sn_model  # noqa: E402

pytestmark = pytest.mark.float64  # the port is compared with sevenn at 1e-10 in float64

torch.set_num_threads(1)
TOL = 1e-5  # the bound: max relative error against sevenn (float32 torch)


# ----------------------------------------------------------------------------- structures


def si_diamond():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def si_primitive_strained():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.02, 0.03, 0.0], [0.0, 0.97, 0.01], [0.0, 0.0, 1.01]]),
                   scale_atoms=True)
    atoms.positions[1] += [0.05, -0.03, 0.02]
    return atoms


def nacl():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.08, seed=2)
    return atoms


def quartz():
    atoms = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], spacegroup=154,
                    cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    atoms.rattle(0.04, seed=3)
    return atoms


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.03, seed=4)
    return atoms


def mixed_cell():
    rng = np.random.default_rng(5)
    symbols = ["Li", "Fe", "O", "O", "Hf", "N"]
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)[: len(symbols)]
    pos = grid * 2.1 + rng.normal(scale=0.1, size=(len(symbols), 3))
    return Atoms(symbols, positions=pos, cell=np.diag([4.3, 4.1, 4.4]) + 0.2 * rng.normal(size=(3, 3)), pbc=True)


STRUCTURES = {
    "si_diamond": si_diamond,
    "si_primitive_strained": si_primitive_strained,
    "nacl": nacl,
    "quartz": quartz,
    "ethanol": ethanol,
    "mixed_cell": mixed_cell,
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def converted():
    return sevennet.read_checkpoint()


@pytest.fixture(scope="module")
def sevenn_calc():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


@pytest.fixture(scope="module")
def jax_calc(converted):
    config, params, info = converted
    return sn_export.calculator(config, params, dtype="float64", info=info)


def reference(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


def relative_errors(ours, ref) -> dict[str, float]:
    """|dE|/|E|; for arrays max|d| / max(max|ref|, floor): the floors (0.1 eV/A, 0.01 eV/A^3,
    0.1 eV) keep quantities that vanish by symmetry from measuring float32 noise."""
    errors = {"energy": abs(ours["energy"] - ref["energy"]) / abs(ref["energy"])}
    for key, floor in (("forces", 0.1), ("stress", 0.01), ("energies", 0.1)):
        if key in ref:
            errors[key] = float(np.abs(ours[key] - ref[key]).max() / max(np.abs(ref[key]).max(), floor))
    return errors


# ----------------------------------------------------------------------------- conversion details


def test_activation_constant_is_e3nn_normalize2mom():
    from e3nn.math import normalize2mom

    from facet_sevennet.convert import activation_constant

    assert activation_constant("silu") == normalize2mom(torch.nn.functional.silu).cst


def test_clebsch_gordan_matches_e3nn_torch():
    from e3nn.o3 import wigner_3j

    for l1 in range(3):
        for l2 in range(3):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 2) + 1):
                ours = sn_model.clebsch_gordan(l1, l2, l3)
                np.testing.assert_allclose(ours, wigner_3j(l1, l2, l3).double().numpy(), atol=5e-8)


def test_parameter_count(converted):
    config, params, _ = converted
    # every trainable weight of the checkpoint: 842,440 (+ 89 shifts and 89 scales, fixed)
    assert sn_model.count_parameters(params) == 842_440
    assert sn_model.count_parameters(params, trainable_only=False) == 842_440 + 2 * 89
    structure = jax.tree.structure(jax.eval_shape(lambda: sn_model.init(config)))
    assert jax.tree.structure(params) == structure


# ----------------------------------------------------------------------------- layer by layer


def test_layer_by_layer(converted, sevenn_calc):
    """Node features after the embedding and after every interaction layer, on the
    edges sevenn itself builds, against the torch model run module by module."""
    import sevenn._keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    config, params, _ = converted
    atoms = nacl()
    model = sevenn_calc.model
    data = model._preprocess(AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, config.cutoff)))
    torch_features = {}
    for name, module in model._modules.items():
        data = module(data)
        if name == "onehot_to_feature_x":
            torch_features["embedding"] = data[KEY.NODE_FEATURE].detach().numpy().copy()
        if name.endswith("_equivariant_gate"):
            torch_features[f"features_{name.split('_')[0]}"] = data[KEY.NODE_FEATURE].detach().numpy().copy()
        if name == "reduce_hidden_to_energy":
            torch_features["scaled_atomic_energy"] = data[KEY.SCALED_ATOMIC_ENERGY].detach().numpy().ravel()
            break
    edge_index = data[KEY.EDGE_IDX].numpy()
    vectors = data[KEY.EDGE_VEC].detach().numpy().astype(np.float64)
    species = np.array([config.elements.index(s) for s in atoms.get_chemical_symbols()], np.int32)
    module = sevennet.SevenNet(config)
    p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    _, state = module.apply(p64, jnp.asarray(vectors), jnp.asarray(edge_index[1], jnp.int32),
                            jnp.asarray(edge_index[0], jnp.int32), jnp.asarray(species), mutable=["intermediates"])
    ours = {k: np.asarray(v[0]) for k, v in state["intermediates"].items() if not k.startswith("message_sum")}
    assert set(torch_features) <= set(ours)
    for key, ref in torch_features.items():
        err = np.abs(ours[key] - ref).max() / np.abs(ref).max()
        assert err < TOL, f"{key}: relative error {err:.2e}"


# ----------------------------------------------------------------------------- full model


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_matches_sevenn_calculator(name, sevenn_calc, jax_calc):
    atoms = STRUCTURES[name]()
    errors = relative_errors(reference(jax_calc, atoms), reference(sevenn_calc, atoms))
    assert max(errors.values()) < TOL, errors


def test_exported_model_file_runs_in_ase(converted, sevenn_calc, tmp_path):
    from facet.calculator import FacetCalculator

    config, params, info = converted
    path = tmp_path / "sevennet0.hlo"
    header = sn_export.export_model(config, params, path, dtype="float64", info=info)
    assert header["cutoff"] == 5.0 and header["num_layers"] == 5 and len(header["elements"]) == 89
    calc = FacetCalculator(str(path))
    for make in (si_diamond, quartz):
        errors = relative_errors(reference(calc, make()), reference(sevenn_calc, make()))
        assert max(errors.values()) < TOL, errors


def test_exported_model_file_runs_in_lammps(converted, sevenn_calc, tmp_path):
    from lammps_support import lammps_eval, plugin_path

    plugin_path()  # skips when the LAMMPS plugin is not built
    config, params, info = converted
    path = tmp_path / "sevennet0.hlo"
    sn_export.export_model(config, params, path, dtype="float64", info=info)
    atoms = quartz()
    out = lammps_eval(atoms, str(path), ["Si", "O"], tmpdir=tmp_path)
    ref = reference(sevenn_calc, atoms)
    assert abs(out["energy"] - ref["energy"]) / abs(ref["energy"]) < TOL
    assert np.abs(out["forces"] - ref["forces"]).max() / np.abs(ref["forces"]).max() < TOL


def test_import_does_not_need_torch():
    """The main .venv has no torch: everything but reading a .pth must work without it."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import facet_sevennet, facet_sevennet.model, facet_sevennet.export, facet_sevennet.streamline\n"
        "import facet_sevennet.__main__\n"
        "assert 'torch' not in sys.modules\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ----------------------------------------------------------------------------- streamlined


@pytest.fixture(scope="module")
def streamlined(converted):
    from facet_sevennet.streamline import streamline

    config, params, _ = converted
    radii = tuple(float(r) for r in np.arange(0.25, 5.26, 0.25))
    values = tuple(0.2 * r**3 for r in radii)  # a stand-in k(r) table (k(5 A) = 25)
    return streamline(config, params, degree_radii=radii, degree_values=values, degree_exponent=0.7,
                      graph_cutoff=5.25, r_min=1.7)


def test_streamline_parameters_and_fit(converted, streamlined):
    config, params, _ = converted
    s_config, s_params, summary = streamlined
    # 842,440 - radial MLPs (218,368) - readout (8,192) + fitted filters + 128-vector readout + r_max
    assert sn_model.count_parameters(s_params) == 615_945
    assert jax.tree.structure(s_params) == jax.tree.structure(jax.eval_shape(lambda: sn_model.init(s_config)))
    assert min(summary["r2_per_layer"]) > 0.99 and summary["r2_pooled"] > 0.999
    # the collapsed readout is exactly the two linear maps
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(5, 128))
    w1 = params["params"]["readout_1"].astype(np.float64)
    w2 = params["params"]["readout_2"].astype(np.float64)
    np.testing.assert_allclose(feat @ s_params["params"]["readout"], feat @ w1 @ w2 / np.sqrt(128 * 64), rtol=1e-5)
    # at r_max = 5 A the streamlined model divides by k(5)^0.7 and its filters carry k(5)^0.7 / D
    assert sn_model.cutoff(s_params, s_config) == pytest.approx(5.0, abs=1e-5)


def test_streamlined_close_to_original(converted, streamlined, jax_calc):
    s_config, s_params, _ = streamlined
    calc = sn_export.calculator(s_config, s_params, dtype="float64")
    for make in (si_diamond, si_primitive_strained):
        atoms = make()
        ours, ref = reference(calc, atoms), reference(jax_calc, atoms)
        # Differences come from the filter fits only (the divisor is folded exactly): a
        # wrong fold or readout would be off by tens of percent, not a few meV/atom.
        assert abs(ours["energy"] - ref["energy"]) / len(atoms) < 0.01  # eV/atom
        assert np.abs(ours["forces"] - ref["forces"]).max() < 0.2 * max(1.0, np.abs(ref["forces"]).max())


def test_streamlined_model_file_in_ase_and_lammps(streamlined, tmp_path):
    from lammps_support import lammps_eval, plugin_path

    from facet.calculator import FacetCalculator

    s_config, s_params, _ = streamlined
    path = tmp_path / "streamlined.hlo"
    header = sn_export.export_model(s_config, s_params, path, dtype="float64")
    assert header["model_config"]["architecture"] == "sevennet-streamlined"
    assert header["cutoff"] == pytest.approx(5.0, abs=1e-5) and header["graph_cutoff"] == 5.25
    atoms = si_diamond()
    inproc = reference(sn_export.calculator(s_config, s_params, dtype="float64"), atoms)
    from_file = reference(FacetCalculator(str(path)), atoms)
    assert max(relative_errors(from_file, inproc).values()) < 1e-10
    plugin_path()  # skips when the LAMMPS plugin is not built
    out = lammps_eval(atoms, str(path), ["Si"], tmpdir=tmp_path)
    assert abs(out["energy"] - inproc["energy"]) / abs(inproc["energy"]) < 1e-10
    assert np.abs(out["forces"] - inproc["forces"]).max() < 1e-8
