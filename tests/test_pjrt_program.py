"""The model file's PJRT sections (facet.pjrt_program): the StableHLO template of each
bucket is exactly the program jax runs, checked by compiling it with XLA directly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facet import export, modelfile, pjrt_program

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def toy(edge_vectors, senders, receivers, species, energy_mask):
    """A pair energy per receiving atom, species-scaled, with the model-file contract."""

    def total(v):
        d = jnp.sqrt(jnp.sum(v**2, axis=-1))
        pair = jnp.where(d < 3.0, (1.0 - d / 3.0) ** 3, 0.0) * (1.0 + species[receivers])
        atoms = jax.ops.segment_sum(pair, receivers, num_segments=species.shape[0])
        return jnp.sum(atoms * energy_mask), atoms

    g, atoms = jax.grad(total, has_aux=True)(edge_vectors)
    return atoms, g


def compile_with_xla(text: str):
    """Compile MLIR text with jaxlib's own XLA client (no jax tracing): what PJRT does."""
    from jax._src import xla_bridge
    from jax._src.lib import xla_client

    backend = xla_bridge.get_backend("cpu")
    devices = xla_client.DeviceList(tuple(backend.devices()[:1]))
    return backend.compile_and_load(text, devices, xla_client.CompileOptions())


def test_template_is_the_program_of_every_bucket():
    exported = export.export_program(toy, "float64", ("cpu",))
    template = pjrt_program.make_template(exported, "cpu")
    assert pjrt_program.ATOMS_SLOT in template and pjrt_program.EDGES_SLOT in template
    rng = np.random.default_rng(0)
    for n, e in [(9, 64), (17, 320)]:
        executable = compile_with_xla(pjrt_program.fill(template, n, e))
        inputs = [rng.normal(size=(e, 3)) * 2.0, rng.integers(0, n, e).astype(np.int32),
                  rng.integers(0, n, e).astype(np.int32), rng.integers(0, 2, n).astype(np.int32),
                  (rng.random(n) > 0.2).astype(np.float64)]
        got = executable.execute([jax.device_put(x) for x in inputs])
        want = exported.call(*inputs)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)


def test_model_file_carries_the_pjrt_sections(tmp_path):
    exported = export.export_program(toy, "float64", ("cpu",))
    header = export.make_header(elements=("H", "O"), cutoff=3.0, num_layers=1, dtype="float64")
    path = tmp_path / "toy.hlo"
    written = modelfile.save_model_file(path, exported, header, pjrt_program.sections(exported))
    assert written["format_version"] == 2
    header, payload = modelfile._parse(path, path.read_bytes(), verify_payload=True)
    sections = modelfile.split_sections(header, payload)
    assert list(sections) == ["jax_export", "stablehlo_template:cpu", "xla_compile_options"]
    assert sections["stablehlo_template:cpu"].decode() == pjrt_program.make_template(exported, "cpu")
    runner_header, program = modelfile.load_model_file(path)  # the Python runtime reads format 2
    np.testing.assert_allclose(program.call(np.ones((64, 3)), np.zeros(64, np.int32), np.zeros(64, np.int32),
                                            np.zeros(9, np.int32), np.ones(9))[0],
                               toy(jnp.ones((64, 3)), jnp.zeros(64, jnp.int32), jnp.zeros(64, jnp.int32),
                                   jnp.zeros(9, jnp.int32), jnp.ones(9))[0], rtol=1e-13)
