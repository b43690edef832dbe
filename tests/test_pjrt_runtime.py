"""The C++ runtime without Python (facet._pjrt: PJRT plugin, StableHLO template, C++
assembly) against the jax runtime and the JAX force/virial reference, and its errors."""

import struct

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from test_pjrt_program import toy  # a pair energy with the model-file contract

from facet import export, model, modelfile
from facet.calculator import FacetCalculator
from facet.errors import ModelFileError, RuntimeSetupError

_pjrt = pytest.importorskip("facet._pjrt", reason="facet._pjrt is not built (pip install -e .)")

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


@pytest.fixture(scope="module")
def model_file(tiny_model, tmp_path_factory):
    cfg, _, params = tiny_model
    path = tmp_path_factory.mktemp("pjrt") / "tiny64.hlo"
    export.export_model(cfg, params, path, dtype="float64", stages=False)
    return path


def sio(rattle=0.05, seed=3):
    atoms = bulk("Si", "diamond", a=5.0, cubic=True)
    atoms.numbers[::2] = 8
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_pjrt_calculator_matches_the_jax_runtime(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FACET_CACHE_DIR", str(tmp_path / "cache"))
    jax_calc = FacetCalculator(model_file)
    pjrt_calc = FacetCalculator(model_file, runtime="pjrt")
    for atoms in (sio(), sio(seed=4) * (2, 1, 1)):
        results = {}
        for name, calc in (("jax", jax_calc), ("pjrt", pjrt_calc)):
            atoms.calc = calc
            results[name] = (atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces(),
                             atoms.get_stress())
        for a, b in zip(results["jax"], results["pjrt"]):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
    assert pjrt_calc.runner.num_compilations == 2 and pjrt_calc.runner.num_cache_loads == 0
    # a second model object (a new process, as far as the cache knows) loads both from the cache
    again = _pjrt.Model(str(model_file))
    for n, e in pjrt_calc.runner.shapes_seen:
        again.precompile(n - 1, e)
    assert again.num_compilations == 0 and again.num_cache_loads == 2


def test_cpp_assembly_matches_the_jax_reference():
    rng = np.random.default_rng(0)
    n, e = 7, 40
    vectors, gradients = rng.normal(size=(e, 3)), rng.normal(size=(e, 3))
    senders, receivers = rng.integers(0, n, e).astype(np.int32), rng.integers(0, n, e).astype(np.int32)
    forces, voigt, atom_virials = _pjrt.assemble(vectors, senders, receivers, gradients, n)
    ref_forces, ref_virial = model.forces_and_virial(jnp.asarray(vectors), senders, receivers,
                                                     jnp.asarray(gradients), n)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-13)
    sym = 0.5 * (np.asarray(ref_virial) + np.asarray(ref_virial).T)
    np.testing.assert_allclose(voigt, sym[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]], atol=1e-13)
    np.testing.assert_allclose(atom_virials.sum(axis=0), voigt, atol=1e-13)


def _rewrite(src, dst, *, version=None, sections=None, header_update=None):
    header, payload = modelfile._parse(src, src.read_bytes(), verify_payload=True)
    header.update(header_update or {})
    parts = modelfile.split_sections(header, payload)
    if sections is not None:
        parts = sections(parts)
    data = bytearray(modelfile.build_file_bytes(header, parts))
    if version is not None:
        struct.pack_into("<I", data, 8, version)
    dst.write_bytes(bytes(data))
    return str(dst)


def test_errors_name_the_problem_and_the_fix(model_file, tmp_path):
    with pytest.raises(ModelFileError, match="format version 3.*upgrade facet-md"):
        _pjrt.Model(_rewrite(model_file, tmp_path / "v3.hlo", version=3))
    only_jax = _rewrite(model_file, tmp_path / "nopjrt.hlo", sections=lambda s: {"jax_export": s["jax_export"]})
    with pytest.raises(ModelFileError, match="no program for runtimes without Python.*facet.export upgrade"):
        _pjrt.Model(only_jax)
    with pytest.raises(RuntimeSetupError, match="cannot load the PJRT plugin '/nonexistent/plugin.so'.*pip install"):
        _pjrt.Model(str(model_file), plugin="/nonexistent/plugin.so")
    import ctypes.util

    libm = ctypes.util.find_library("m")
    with pytest.raises(RuntimeSetupError, match="exports no GetPjrtApi"):
        _pjrt.Model(str(model_file), plugin=libm)

    def broken(parts):
        parts["stablehlo_template:cpu"] = parts["stablehlo_template:cpu"].replace(b"stablehlo.", b"stablehlo.x", 1)
        return parts

    unreadable = _pjrt.Model(_rewrite(model_file, tmp_path / "broken.hlo", sections=broken), cache_dir="off")
    with pytest.raises(RuntimeSetupError, match="could not compile the model.*runtime python"):
        unreadable(np.zeros((1, 3)), np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(2, np.int32),
                   np.ones(2))
    with pytest.raises(ValueError, match="species must be indices"):
        _pjrt.Model(str(model_file))(np.zeros((1, 3)), np.zeros(1, np.int32), np.zeros(1, np.int32),
                                     np.full(2, 9, np.int32), np.ones(2))


def test_format_1_files_get_a_clear_message(model_file, tmp_path):
    """Files written before format 2 have no PJRT program: the C++ runtime says how to get one."""
    import hashlib
    import json

    header, payload = modelfile._parse(model_file, model_file.read_bytes(), verify_payload=True)
    program = modelfile.split_sections(header, payload)["jax_export"]
    for key in ("sections",):
        header.pop(key)
    header.update(format_version=1, payload_bytes=len(program), payload_sha256=hashlib.sha256(program).hexdigest())
    header_bytes = json.dumps(header).encode()
    old = tmp_path / "v1.hlo"
    old.write_bytes(struct.pack("<8sIIQQ32s", b"FACETMD\0", 1, 0, len(header_bytes), len(program),
                                hashlib.sha256(header_bytes).digest()) + header_bytes + program)
    assert modelfile.load_model_file(old)[0]["format_version"] == 1  # the Python runtime still reads it
    with pytest.raises(ModelFileError, match="format 1.*no program for runtimes without Python.*upgrade"):
        _pjrt.Model(str(old))
    export.upgrade(old, tmp_path / "v2.hlo")  # python -m facet.export upgrade
    assert _pjrt.Model(str(tmp_path / "v2.hlo")).elements == ["O", "Si"]


@pytest.mark.parametrize("platforms", [("cpu", "cuda"), ("cuda",)])
def test_models_exported_for_several_platforms(tmp_path, platforms):
    from facet import pjrt_program

    exported = export.export_program(toy, "float64", platforms)
    header = export.make_header(elements=("H", "O"), cutoff=3.0, num_layers=1, dtype="float64")
    path = tmp_path / "multi.hlo"
    modelfile.save_model_file(path, exported, header, pjrt_program.sections(exported))
    assert [s["name"] for s in modelfile.read_header(path)["sections"]] == [
        "jax_export", *[f"stablehlo_template:{p}" for p in platforms], "xla_compile_options"]
    if "cpu" not in platforms:
        with pytest.raises(ModelFileError, match=r"no cpu program in this model file \(exported for cuda\).*"
                                                 r"--platforms cuda,cpu"):
            _pjrt.Model(str(path))
        return
    rng = np.random.default_rng(1)
    n, e = 6, 30
    inputs = (rng.normal(size=(e, 3)) * 2.0, rng.integers(0, n, e).astype(np.int32),
              rng.integers(0, n, e).astype(np.int32), rng.integers(0, 2, n).astype(np.int32), np.ones(n))
    got = _pjrt.Model(str(path), cache_dir="off")(*inputs)
    want = toy(*(jnp.asarray(x) for x in inputs))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-12)


def test_buckets_follow_the_python_runtime(tmp_path):
    """The C++ runtime picks the same bucket as facet.runtime.ModelRunner for every call."""
    from facet import pjrt_program
    from facet.runtime import ModelRunner

    exported = export.export_program(toy, "float64", ("cpu",))
    header = export.make_header(elements=("H", "O"), cutoff=3.0, num_layers=1, dtype="float64")
    path = tmp_path / "toy.hlo"
    modelfile.save_model_file(path, exported, header, pjrt_program.sections(exported))
    cpp, py = _pjrt.Model(str(path), cache_dir="off"), ModelRunner(str(path))
    for n, e in [(12, 100), (12, 97), (12, 113), (12, 90), (12, 40), (100, 3000), (80, 2900), (7, 64)]:
        assert cpp.bucket_for(n, e) == py.bucket_for(n, e), (n, e)
        cpp.precompile(n, e)
        py.precompile(n, e)
    assert sorted(cpp.shapes_seen) == sorted(py.shapes_seen)
