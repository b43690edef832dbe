"""The numpy runtime (facet.runtime), the padding ladder (facet.buckets) and the compilation
cache (facet.compilation_cache), on a cheap stand-in program with the model-file contract."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facet import buckets, compilation_cache, export, graph, model
from facet.runtime import ModelRunner, assemble

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def toy(edge_vectors, senders, receivers, species, energy_mask):
    """A cheap stand-in with the contract: a pair energy per receiving atom."""

    def total(v):
        d = jnp.sqrt(jnp.sum(v**2, axis=-1))
        pair = jnp.where(d < 3.0, (1.0 - d / 3.0) ** 3, 0.0)
        atoms = jax.ops.segment_sum(pair, receivers, num_segments=species.shape[0])
        return jnp.sum(atoms * energy_mask), atoms

    g, atoms = jax.grad(total, has_aux=True)(edge_vectors)
    return atoms, g


def toy_runner(elements=("H",)):
    header = export.make_header(elements=elements, cutoff=3.0, num_layers=1, dtype="float64")
    return ModelRunner((header, export.export_program(toy, "float64")))


def test_runner_interface():
    runner = toy_runner(("H", "O"))
    rng = np.random.default_rng(0)
    positions = rng.uniform(0.0, 4.0, size=(4, 3))
    s, r, shifts = graph.neighbour_list(positions, np.eye(3) * 4.0, np.array([True] * 3), runner.cutoff)
    v = positions[s] - positions[r] + shifts @ (np.eye(3) * 4.0)
    species = np.array([0, 1, 0, 1])
    mask = np.ones(4)
    ae, g = runner(v, s.astype(np.int64), r, species, mask)
    assert ae.dtype == np.float64 and ae.shape == (4,)
    assert g.dtype == np.float64 and g.shape == (len(s), 3)
    # energy_mask: gradients are those of the masked total, atom energies are unmasked
    mask2 = mask.copy()
    mask2[r[0]] = 0.0
    ae2, g2 = runner(v, s, r, species, mask2)
    np.testing.assert_allclose(ae2, ae, rtol=1e-13)
    assert np.abs(g2 - g).max() > 1e-6
    with pytest.raises(ValueError, match="species must be indices"):
        runner(v, s, r, species + 5, mask)
    with pytest.raises(ValueError, match=r"edge atom indices must lie in \[0, 4\)"):
        runner(v, s + 10, r, species, mask)
    with pytest.raises(ValueError, match="edge_vectors must have shape"):
        runner(v[:, :2], s, r, species, mask)
    # no atoms, no edges
    ae0, g0 = runner(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    assert ae0.shape == (0,) and g0.shape == (0, 3)


def test_assemble_conventions():
    rng = np.random.default_rng(0)
    n, e = 5, 12
    vec, g = rng.normal(size=(e, 3)), rng.normal(size=(e, 3))
    s, r = rng.integers(0, n, e), rng.integers(0, n, e)
    forces, virial, per_atom = assemble(vec, s, r, g, n)
    expect = np.zeros((n, 3))
    np.add.at(expect, s, -g)
    np.add.at(expect, r, g)
    np.testing.assert_allclose(forces, expect, atol=1e-14)
    np.testing.assert_allclose(virial, -np.einsum("ei,ej->ij", vec, g), atol=1e-13)
    np.testing.assert_allclose(per_atom.sum(axis=0), virial, atol=1e-13)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-13)
    # the JAX assembly that training uses gives the same numbers
    jax_forces, jax_virial = model.forces_and_virial(jnp.asarray(vec), s, r, jnp.asarray(g), n)
    np.testing.assert_allclose(forces, jax_forces, atol=1e-13)
    np.testing.assert_allclose(virial, jax_virial, atol=1e-13)
    per_structure = model.forces_and_virial(jnp.asarray(vec), s, r, jnp.asarray(g), n, np.arange(e) % 2, 2)[1]
    np.testing.assert_allclose(per_structure.sum(axis=0), virial, atol=1e-13)
    np.testing.assert_allclose(per_structure[0], -np.einsum("ei,ej->ij", vec[::2], g[::2]), atol=1e-13)


def test_padding_ladder():
    ladder = sorted({buckets.ladder_ceil(x) for x in range(16, 1025)})
    assert ladder[:8] == [16, 20, 24, 28, 32, 40, 48, 56]
    ratios = np.array(ladder[1:]) / np.array(ladder[:-1])
    assert ratios.max() <= 1.25 + 1e-12  # rounding up wastes at most 1/steps_per_octave
    assert [buckets.ladder_ceil(x, 4) for x in (4, 5, 9, 17, 33, 65)] == [4, 5, 10, 20, 40, 80]
    assert buckets.padded_sizes(3, 10) == (9, 64)  # minimum rungs, +1 padding atom
    assert buckets.padded_sizes(64, 1024) == (65, 1024)  # rung sizes waste nothing
    assert buckets.padded_sizes(65, 1025) == (81, 1280)
    for n_atoms, n_edges in [(0, 0), (15, 10), (16, 64), (100, 3000), (1023, 70000)]:
        n_node, n_edge = buckets.padded_sizes(n_atoms, n_edges)
        assert n_node >= n_atoms + 1 and n_edge >= n_edges
        assert n_node <= max(9, 1.25 * n_atoms + 1) and n_edge <= max(64, 1.25 * n_edges)


def test_buckets_compile_rarely():
    runner = toy_runner()

    def call(n, e):
        v = np.tile([[1.0, 0.0, 0.0]], (e, 1))
        idx = np.arange(e) % n
        runner(v, idx, idx[::-1].copy(), np.zeros(n, int), np.ones(n))

    call(12, 100)  # 12 atoms -> rung 12, + 1 padding atom; 100 edges -> rung 112
    assert runner.shapes_seen == [(13, 112)] and runner.num_compilations == 1
    for e in range(97, 113):  # same bucket: no compilation
        call(12, e)
    assert runner.num_compilations == 1
    call(12, 113)  # next edge rung
    assert runner.shapes_seen == [(13, 112), (13, 128)]
    call(12, 90)  # would be rung 96, but 112 (one rung up) is compiled: reused
    assert runner.num_compilations == 2
    call(12, 40)  # far smaller: its own bucket (the minimum, 64 edges)
    assert runner.shapes_seen[-1] == (13, 64) and runner.num_compilations == 3
    assert runner.num_calls == 20


def test_compilation_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FACET_CACHE_DIR", str(tmp_path / "c"))
    path = compilation_cache.compilation_cache_dir()
    assert path.startswith(str(tmp_path / "c")) and os.path.isdir(path)
    monkeypatch.setenv("FACET_CACHE_DIR", "off")
    assert compilation_cache.compilation_cache_dir() is None
    monkeypatch.delenv("FACET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.compilation_cache_dir().startswith(str(tmp_path / "xdg" / "facet" / "jax"))


def test_cache_scope_restores_settings(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    with compilation_cache.cache_scope(str(tmp_path)):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert jax.config.jax_compilation_cache_dir == before


def test_stderr_filter_drops_only_the_false_alarm(capfd):
    alarm = (b"E0101 cpu_aot_loader.cc:195] Loading XLA:CPU AOT result. Target machine feature "
             b"+prefer-no-gather is not  supported on the host machine. ...\n")
    real = b"E0101 cpu_aot_loader.cc:195] Target machine feature +avx512f is not supported\n"
    with compilation_cache._filtered_stderr(compilation_cache._FALSE_ALARM):
        os.write(2, alarm + b"something else\n" + real)
    err = capfd.readouterr().err
    assert "prefer-no-gather" not in err
    assert "something else" in err and "+avx512f" in err
