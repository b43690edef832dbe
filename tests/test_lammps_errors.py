"""pair_style facet: every user error gives a clear LAMMPS ERROR, never a
crash or a hang (each run is a subprocess with a timeout)."""

from __future__ import annotations

import numpy as np
import pytest
from lammps_support import (
    StandInConfig,
    new_lammps,
    plugin_path,
    run_lmp,
    si_diamond,
    standin_model_file,
    write_lammps_data,
)

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10

CONFIG = StandInConfig(num_layers=2, cutoff=4.0)


@pytest.fixture(scope="module", autouse=True)
def _plugin():
    plugin_path()


def lmp_input(data, *, units="metal", pair_style=None, pair_coeff="* * Si O", extra="", run="run 0"):
    return f"""
plugin load {plugin_path()}
units {units}
atom_style atomic
read_data {data}
pair_style facet {pair_style or standin_model_file(CONFIG)}
pair_coeff {pair_coeff}
{extra}
{run}
"""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "si.data"
    write_lammps_data(path, si_diamond(), ["Si", "O"])
    return path


def expect_error(tmp_path, text, *fragments, np_=1, timeout=120):
    proc = run_lmp(text, tmp_path, np_=np_, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    error_lines = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert error_lines, out[-2000:]
    message = " ".join(error_lines)
    for fragment in fragments:
        assert fragment in message, message
    for bad in ("Segmentation", "core dumped", "Traceback", "terminate called"):
        assert bad not in out, out[-2000:]
    return message


def test_missing_model_file(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_style="no/such/model.hlo"),
                 "cannot load model 'no/such/model.hlo'", "no such model file", "python -m facet.export")
    expect_error(tmp_path, lmp_input(data_file, pair_style="no/such/model.hlo runtime python"),
                 "cannot load model 'no/such/model.hlo'", "model file not found")


def _rewritten(src, dst, *, version=None, sections=None, header_update=None):
    import struct

    from facet import modelfile

    header, payload = modelfile._parse(src, open(src, "rb").read(), verify_payload=True)
    header.update(header_update or {})
    parts = modelfile.split_sections(header, payload)
    data = bytearray(modelfile.build_file_bytes(header, sections(parts) if sections else parts))
    if version is not None:
        struct.pack_into("<I", data, 8, version)
    dst.write_bytes(bytes(data))
    return str(dst)


def test_pjrt_runtime_errors(tmp_path, data_file):
    """The default runtime's failures: each a LAMMPS ERROR naming the fix, never a crash."""
    model = standin_model_file(CONFIG)
    newer = _rewritten(model, tmp_path / "v9.hlo", version=9)
    expect_error(tmp_path, lmp_input(data_file, pair_style=newer),
                 "unsupported Facet model format version 9", "upgrade facet-md")

    def broken(parts):
        parts["stablehlo_template:cpu"] = parts["stablehlo_template:cpu"].replace(b"stablehlo.", b"stablehlo.x", 1)
        return parts

    unreadable = _rewritten(model, tmp_path / "broken.hlo", sections=broken)
    expect_error(tmp_path, lmp_input(data_file, pair_style=unreadable),
                 "model evaluation failed", "could not compile the model", "runtime python")
    expect_error(tmp_path, lmp_input(data_file, pair_style=f"{model} plugin /no/such/pjrt_plugin.so"),
                 "cannot load the PJRT plugin '/no/such/pjrt_plugin.so'", "pip install xla-cpu-pjrt")
    gpu_only = _rewritten(model, tmp_path / "gpu.hlo", sections=lambda p: {
        "jax_export": p["jax_export"], "stablehlo_template:cuda": p["stablehlo_template:cpu"],
        "xla_compile_options": p["xla_compile_options"]}, header_update={"platforms": ["cuda"]})
    expect_error(tmp_path, lmp_input(data_file, pair_style=gpu_only),
                 "no cpu program in this model file (exported for cuda)", "--platforms cuda,cpu")
    no_pjrt = _rewritten(model, tmp_path / "nopjrt.hlo", sections=lambda p: {"jax_export": p["jax_export"]})
    expect_error(tmp_path, lmp_input(data_file, pair_style=no_pjrt), "no program for runtimes without Python",
                 "python -m facet.export upgrade", "runtime python")
    expect_error(tmp_path, lmp_input(data_file, pair_style=f"{model} runtime jax"),
                 "runtime 'jax': use pjrt (no Python, the default) or python")
    expect_error(tmp_path, lmp_input(data_file, pair_style=f"{model} runtime python device cuda"),
                 "apply to the PJRT runtime")


@pytest.mark.parametrize("content", [b"this is not a Facet model\x00\x01", b""])
def test_invalid_model_file(tmp_path, data_file, content):
    """The model loader's own message (facet.modelfile.ModelFileError) is shown."""
    bad = tmp_path / "garbage.hlo"
    bad.write_bytes(content)
    from facet.modelfile import ModelFileError
    from facet.runtime import ModelRunner

    with pytest.raises(ModelFileError) as info:
        ModelRunner(str(bad))
    expect_error(tmp_path, lmp_input(data_file, pair_style=str(bad)), "cannot load model", str(info.value))


def test_loader_message_passed_through(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_style="python:lammps_support:make_failing_runner:load"),
                 "stand-in refuses to load (bad weights)")


def test_runner_without_interface(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_style="python:lammps_support:make_failing_runner:attrs"),
                 "does not follow the runner interface")


def test_element_not_in_model(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_coeff="* * Si Xx"),
                 "element 'Xx' (atom type 2) is not in the model", "O H Si")


def test_wrong_number_of_elements(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_coeff="* * Si"),
                 "2 atom type(s) but 1 symbol(s)")
    expect_error(tmp_path, lmp_input(data_file, pair_coeff="* * Si O O"),
                 "2 atom type(s) but 3 symbol(s)")
    expect_error(tmp_path, lmp_input(data_file, pair_coeff="1 1 Si O"), "must start with * *")


def test_units_not_metal(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, units="real"), "requires 'units metal'", "'units real'")


def test_comm_cutoff_too_small_multirank(tmp_path, data_file):
    # a file without stage programs falls back to the ghost shell; the message names both fixes
    expect_error(tmp_path, lmp_input(data_file), "comm_modify cutoff 10", "2 x 4 + 2 = 10",
                 "its per-layer programs let ranks exchange features", np_=2)
    # the same input is fine on one rank (folded graph)
    proc = run_lmp(lmp_input(data_file), tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_graph_exchange_needs_stage_programs(tmp_path, data_file):
    """The stand-in's file has no per-layer programs: 'graph exchange' names the fix."""
    expect_error(tmp_path, lmp_input(data_file, pair_style=standin_model_file(CONFIG) + " graph exchange"),
                 "'graph exchange' needs a model file with per-layer (stage) programs",
                 "python -m facet.export CHECKPOINT -o model.hlo", "'graph ghost'", np_=2)


def test_folded_graph_multirank(tmp_path, data_file):
    expect_error(tmp_path, lmp_input(data_file, pair_style=standin_model_file(CONFIG) + " graph folded",
                                     extra="comm_modify cutoff 10"),
                 "'graph folded' works on one MPI rank only", np_=2)


def test_model_failure_on_one_rank_is_collective(tmp_path, data_file):
    """A Python exception on rank 1 only: every rank stops with the message."""
    expect_error(tmp_path, lmp_input(data_file, pair_style="python:lammps_support:make_failing_runner:call_rank1",
                                     extra="comm_modify cutoff 6"),
                 "model evaluation failed", "RuntimeError: stand-in failure on rank 1", "(on MPI rank 1)",
                 np_=2)


@pytest.mark.parametrize("mode,fragment", [("shape", "atom energies for"), ("nan", "non-finite")])
def test_bad_model_outputs(tmp_path, data_file, mode, fragment):
    expect_error(tmp_path, lmp_input(data_file, pair_style=f"python:lammps_support:make_failing_runner:{mode}"),
                 "model evaluation failed", fragment)


def test_errors_are_python_exceptions_in_process(data_file):
    """Driven from Python, a pair_coeff error raises and the instance survives."""
    lmp = new_lammps()
    try:
        lmp.commands_string(f"units metal\nread_data {data_file}\npair_style facet {standin_model_file(CONFIG)}")
        with pytest.raises(Exception, match="not in the model"):
            lmp.command("pair_coeff * * Si Xx")
        lmp.command("pair_coeff * * Si O")
        lmp.command("run 0")
        assert np.isfinite(lmp.get_thermo("pe"))
    finally:
        lmp.close()
