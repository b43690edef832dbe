"""The model file container: round trip, atomic writes, and every loading failure."""

import json
import os
import struct

import jax
import numpy as np
import pytest

from facet import export, files, modelfile
from facet.modelfile import PREAMBLE_SIZE, ModelFileError, load_model_file, read_header, save_model_file

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def toy_energy(edge_vectors, senders, receivers, species, energy_mask):
    """A stand-in with the Facet contract: a smooth pair potential with an envelope."""
    import jax.numpy as jnp

    def total(vectors):
        d = jnp.sqrt(jnp.sum(vectors**2, axis=-1))
        x = jnp.minimum(d / 3.0, 1.0)
        pair = (1.0 + species[senders] + species[receivers]) * jnp.exp(-d) * (1.0 - x**2) ** 3
        atoms = 0.5 * jax.ops.segment_sum(pair, receivers, num_segments=species.shape[0])
        return jnp.sum(atoms * energy_mask), atoms

    grads, atoms = jax.grad(total, has_aux=True)(edge_vectors)
    return atoms, grads


def toy_header(dtype="float64"):
    return export.make_header(elements=("H", "O"), cutoff=3.0, num_layers=1, dtype=dtype,
                              parameter_count=0, info={"dataset": "none"})


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("modelfile") / "toy.hlo"
    exported = export.export_program(toy_energy, "float64", ("cpu",))
    header = save_model_file(path, exported, toy_header())
    return path, header


def _rewrite(src, dst, *, header_update=None, payload=None, version=None):
    """Copy a model file changing header fields, payload or version, with valid checksums."""
    header, old_payload = modelfile._parse(src, src.read_bytes(), verify_payload=True)
    header.update(header_update or {})
    sections = modelfile.split_sections(header, old_payload)
    if payload is not None:
        sections[modelfile.JAX_SECTION] = payload
    data = bytearray(modelfile.build_file_bytes(header, sections))
    if version is not None:
        struct.pack_into("<I", data, 8, version)
    dst.write_bytes(bytes(data))
    return dst


def test_round_trip(toy_file):
    path, written = toy_file
    assert path.read_bytes()[:8] == b"FACETMD\0"
    header = read_header(path, verify_payload=True)
    assert header == json.loads(json.dumps(written))
    for key in ("elements", "cutoff", "num_layers", "dtype", "platforms", "jax_version", "facet_version",
                "parameter_count", "training", "shape_policy", "payload_sha256", "calling_convention_version"):
        assert key in header, key
    assert header["elements"] == ["H", "O"] and header["atomic_numbers"] == [1, 8]
    assert header["shape_policy"]["kind"] == "symbolic"
    assert header["inputs"][0] == {"shape": ["E", "3"], "dtype": "float64"}
    header2, exported = load_model_file(path)
    assert header2 == header
    assert [str(a.dtype) for a in exported.in_avals] == ["float64", "int32", "int32", "int32", "float64"]
    # The loaded program computes the stand-in.
    args = (np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]), np.array([1, 0], np.int32),
            np.array([0, 1], np.int32), np.array([0, 1], np.int32), np.ones(2))
    with jax.enable_x64(True):
        want = toy_energy(*args)
        got = exported.call(*args)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-14)


def test_atomic_write_keeps_old_file_on_failure(toy_file, tmp_path, monkeypatch):
    path = tmp_path / "model.hlo"
    path.write_bytes(toy_file[0].read_bytes())
    before = path.read_bytes()
    exported = export.export_program(toy_energy, "float64", ("cpu",))

    def boom(data_path, data):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", lambda *a: boom(*a))
    with pytest.raises(OSError, match="disk full"):
        save_model_file(path, exported, toy_header())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.hlo"]  # no temporary left behind


def test_save_rejects_dtype_mismatch(tmp_path):
    exported = export.export_program(toy_energy, "float32", ("cpu",))
    with pytest.raises(ValueError, match="does not match"):
        save_model_file(tmp_path / "m.hlo", exported, toy_header("float64"))


# ----------------------------------------------------------------------------- failures


def expect_error(path, *fragments):
    with pytest.raises(ModelFileError) as info:
        load_model_file(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.hlo", "no such model file", "python -m facet.export")


def test_not_a_facet_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text('{"this": "is json"}')
    expect_error(text, "not a Facet model file", "JSON", "python -m facet.export")
    checkpoint = tmp_path / "ckpt.msgpack"
    checkpoint.write_bytes(b"\x87\xa6format\xb0facet-checkpoint" + b"\0" * 100)
    expect_error(checkpoint, "not a Facet model file", "checkpoint", "export it first")
    expect_error(tmp_path, "is a directory")


@pytest.mark.parametrize("keep", [4, 40, PREAMBLE_SIZE + 10, -1])
def test_truncated(toy_file, tmp_path, keep):
    data = toy_file[0].read_bytes()
    bad = tmp_path / "cut.hlo"
    bad.write_bytes(data[:keep] if keep > 0 else data[:-1000])
    expect_error(bad, "truncated", "copy the file again or re-export")


def test_trailing_garbage(toy_file, tmp_path):
    bad = tmp_path / "long.hlo"
    bad.write_bytes(toy_file[0].read_bytes() + b"extra")
    expect_error(bad, "5 unexpected bytes", "re-export")


def test_payload_checksum_mismatch(toy_file, tmp_path):
    data = bytearray(toy_file[0].read_bytes())
    data[-200] ^= 0x01  # one flipped bit in the program
    bad = tmp_path / "flipped.hlo"
    bad.write_bytes(bytes(data))
    expect_error(bad, "checksum mismatch", "corrupted", "re-export")
    # read_header alone does not hash the payload, verify_payload does
    assert read_header(bad)["elements"] == ["H", "O"]
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        read_header(bad, verify_payload=True)


def test_header_checksum_mismatch(toy_file, tmp_path):
    data = bytearray(toy_file[0].read_bytes())
    data[PREAMBLE_SIZE + 5] ^= 0x20
    bad = tmp_path / "header.hlo"
    bad.write_bytes(bytes(data))
    expect_error(bad, "checksum mismatch in the header")


def test_garbage_program_with_valid_checksum(toy_file, tmp_path):
    bad = _rewrite(toy_file[0], tmp_path / "garbage.hlo", payload=os.urandom(4096))
    expect_error(bad, "could not be deserialized", "re-export")


def test_unsupported_format_version(toy_file, tmp_path):
    bad = _rewrite(toy_file[0], tmp_path / "v3.hlo", version=3)
    expect_error(bad, "unsupported Facet model format version 3", "newer Facet", "upgrade facet-md")
    old = _rewrite(toy_file[0], tmp_path / "v0.hlo", version=0)
    expect_error(old, "unsupported Facet model format version 0")


def test_newer_jax(toy_file, tmp_path):
    bad = _rewrite(toy_file[0], tmp_path / "newjax.hlo", header_update={"jax_version": "99.1.0"})
    expect_error(bad, "exported with jax 99.1.0", f"installed jax is {jax.__version__}", "jax>=99.1.0",
                 "re-export")


def test_unsupported_calling_convention(toy_file, tmp_path):
    bad = _rewrite(toy_file[0], tmp_path / "ccv.hlo", header_update={"calling_convention_version": 999})
    expect_error(bad, "calling convention 999", "Re-export")


def test_float64_without_x64(toy_file, monkeypatch):
    monkeypatch.setattr(modelfile, "x64_available", lambda: False)
    expect_error(toy_file[0], "float64 model", "x64", "--dtype float32")


def test_other_platform(toy_file, tmp_path):
    bad = _rewrite(toy_file[0], tmp_path / "gpu.hlo", header_update={"platforms": ["cuda"]})
    expect_error(bad, "exported for platform(s) ['cuda']", "--platforms cuda,cpu")


def test_malformed_header(toy_file, tmp_path):
    header, payload = modelfile._parse(toy_file[0], toy_file[0].read_bytes(), verify_payload=True)
    del header["elements"]
    data = modelfile.build_file_bytes(header, modelfile.split_sections(header, payload))
    bad = tmp_path / "noelements.hlo"
    bad.write_bytes(data)
    expect_error(bad, "missing ['elements']")


def test_wrong_signature(tmp_path):
    """A program that does not follow the contract (here: integer energies) is refused."""
    import jax.numpy as jnp

    def wrong(edge_vectors, senders, receivers, species, energy_mask):
        return species, edge_vectors

    n, e = jax.export.symbolic_shape("N, E")
    with jax.enable_x64(True):
        specs = (jax.ShapeDtypeStruct((e, 3), jnp.float64), jax.ShapeDtypeStruct((e,), jnp.int32),
                 jax.ShapeDtypeStruct((e,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.int32),
                 jax.ShapeDtypeStruct((n,), jnp.float64))
        exported = jax.export.export(jax.jit(wrong), platforms=("cpu",))(*specs)
    path = tmp_path / "wrong.hlo"
    save_model_file(path, exported, toy_header())
    expect_error(path, "does not match the Facet contract")


# ----------------------------------------------------------------------------- inspect


def test_inspect_cli(toy_file, capsys):
    path = toy_file[0]
    assert export.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Facet model file, format version 2" in out
    assert "elements:        H O" in out and "float64" in out and "loadable" in out
    assert "sections:        jax_export" in out and "Python runtime only" in out  # written without PJRT sections
    assert export.main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["elements"] == ["H", "O"]


def test_inspect_reports_problems(toy_file, tmp_path, capsys):
    bad = _rewrite(toy_file[0], tmp_path / "newjax.hlo", header_update={"jax_version": "99.0"})
    assert export.main(["inspect", str(bad)]) == 0
    assert "NOT USABLE HERE" in capsys.readouterr().out
    broken = tmp_path / "broken.hlo"
    broken.write_bytes(toy_file[0].read_bytes()[:100])
    assert export.main(["inspect", str(broken)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_reading_a_header_does_not_import_jax(toy_file):
    """The header reader and facet.runtime stay light (the LAMMPS plugin imports them)."""
    import subprocess
    import sys

    code = (
        "import sys; from facet.modelfile import read_header; import facet.runtime; "
        f"h = read_header({str(toy_file[0])!r}, verify_payload=True); "
        "assert h['elements'] == ['H', 'O']; "
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
