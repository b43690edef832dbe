"""The Facet model against independent references: symmetry, locality,
smoothness at the cutoff, finite differences, and padding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from conftest import randomised_params
from scipy.spatial.transform import Rotation

from facet import model
from facet.config import FacetConfig

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def sio2_like(seed=0, n=(2, 1, 1)):
    """A rattled, sheared two-element periodic cell (triclinic)."""
    atoms = bulk("Si", "diamond", a=5.43) * n
    atoms.numbers[::3] = 8
    atoms.set_cell(atoms.cell.array + np.array([[0, 0.3, 0.1], [0.2, 0, 0], [0, 0.4, 0]]), scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def edges(atoms, cutoff):
    i, j, S = neighbor_list("ijS", atoms, cutoff)  # ase: independent neighbour list
    vec = atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array
    return vec, j, i


def species_of(atoms, cfg):
    symbols = list(cfg.elements)
    return np.array([symbols.index(s) for s in atoms.get_chemical_symbols()], np.int32)


@functools.partial(jax.jit, static_argnums=(0,))
def _energy_forces_virial(module, params, vec, s, r, species):
    n = species.shape[0]
    e, g = model.energy_and_edge_gradients(module, params, vec, s, r, species, jnp.ones(n))
    forces, virial = model.forces_and_virial(vec, s, r, g, n)
    return e, forces, virial


def evaluate(cfg, module, params, atoms):
    """Energy, per-atom energies, forces, virial, via the runtime contract."""
    vec, s, r = edges(atoms, cfg.graph_cutoff)
    e, forces, virial = _energy_forces_virial(module, params, vec, s, r, species_of(atoms, cfg))
    return float(jnp.sum(e)), np.asarray(e), np.asarray(forces), np.asarray(virial)


def test_envelope_vanishes_smoothly_at_r_max():
    x = jnp.asarray([0.0, 0.5, 1.0 - 1e-9, 1.0, 1.5])
    u = model.polynomial_envelope(x, 6)
    du = jax.vmap(jax.grad(lambda t: model.polynomial_envelope(t, 6)))(x)
    assert float(u[0]) == pytest.approx(1.0)
    assert abs(float(u[2])) < 1e-12 and float(u[3]) == 0.0 and float(u[4]) == 0.0
    assert abs(float(du[2])) < 1e-7 and float(du[3]) == 0.0


def test_envelope_is_the_closed_form_u_p():
    x = jnp.linspace(0.0, 1.0, 101)
    p = 6
    ref = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    np.testing.assert_allclose(model.polynomial_envelope(x, p), ref, atol=1e-12)


def test_bessel_basis_is_finite_at_zero_distance():
    f = jnp.arange(1, 9) * np.pi / 5.0
    b = model.bessel_basis(jnp.asarray([0.0, 1e-3]), f, 5.0)
    np.testing.assert_allclose(b[0], np.sqrt(2 / 5.0) * np.asarray(f), rtol=1e-12)  # the d -> 0 limit
    np.testing.assert_allclose(b[0], b[1], rtol=1e-5)
    grad = jax.grad(lambda d: model.bessel_basis(d, f, 5.0).sum())(jnp.zeros(1))
    assert np.isfinite(np.asarray(grad)).all()


def test_bessel_basis_matches_closed_form():
    d = jnp.asarray([0.7, 1.9, 3.3])
    f = jnp.arange(1, 9) * np.pi / 5.0
    b = model.bessel_basis(d, f, 5.0)
    ref = np.sqrt(2 / 5.0) * np.sin(np.outer(np.asarray(d), np.asarray(f))) / np.asarray(d)[:, None]
    np.testing.assert_allclose(b, ref, rtol=1e-12)


def test_degree_normalisation_is_differentiable_in_r_max():
    radii, values = jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([2.0, 6.0, 14.0])
    assert float(model.average_degree(2.5, radii, values)) == pytest.approx(10.0)
    assert float(jax.grad(lambda r: model.average_degree(r, radii, values) ** 0.7)(2.5)) == pytest.approx(
        0.7 * 10.0 ** -0.3 * 8.0)


def test_facet_small_parameter_count():
    cfg = FacetConfig(elements=("Si", "O"), degree_radii=(0.5, 6.0), degree_values=(0.1, 40.0))
    params = model.init(model.Facet(cfg), jax.random.key(0))
    count = model.count_parameters(params)
    print(f"Facet-Small parameters: {count:,}")
    assert 250_000 < count < 310_000


def test_layer_scales_start_at_zero_and_r_max_is_trainable(tiny_model):
    cfg, module, _ = tiny_model
    params = model.init(module, jax.random.key(1))
    scales = [x for p, x in jax.tree_util.tree_leaves_with_path(params) if "layer_scale" in jax.tree_util.keystr(p)]
    assert scales and all(float(jnp.abs(s).max()) == 0.0 for s in scales)
    assert model.cutoff(params, cfg) == pytest.approx(cfg.r_max_init)
    atoms = sio2_like()
    vec, s, r = edges(atoms, cfg.graph_cutoff)
    params = randomised_params(module)
    species = species_of(atoms, cfg)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, vec, s, r, species) ** 2)))(params)
    assert abs(float(grad["params"]["r_max_raw"])) > 0
    assert float(jnp.abs(grad["params"]["bessel_frequencies"]).max()) > 0


def test_translation_and_permutation_invariance(tiny_model):
    cfg, module, params = tiny_model
    atoms = sio2_like()
    e0, ea0, f0, _ = evaluate(cfg, module, params, atoms)
    moved = atoms.copy()
    moved.positions += np.array([1.3, -0.7, 2.9])
    e1, _, f1, _ = evaluate(cfg, module, params, moved)
    assert e1 == pytest.approx(e0, rel=1e-11)
    np.testing.assert_allclose(f1, f0, atol=1e-9)
    perm = np.random.default_rng(0).permutation(len(atoms))
    e2, ea2, f2, _ = evaluate(cfg, module, params, atoms[perm])
    assert e2 == pytest.approx(e0, rel=1e-11)
    np.testing.assert_allclose(ea2, ea0[perm], atol=1e-10)
    np.testing.assert_allclose(f2, f0[perm], atol=1e-9)


def test_rotation_and_reflection_equivariance(tiny_model):
    """Exact up to the S2 grid's aliasing. The paper's target (< 1 %) is for the
    outputs (energies); forces are derivatives, which amplify aliasing a little."""
    cfg, module, params = tiny_model
    atoms = sio2_like()
    e0, ea0, f0, _ = evaluate(cfg, module, params, atoms)
    spread = np.std(ea0)
    worst_e = worst_f = 0.0
    for rot in Rotation.random(3, random_state=1).as_matrix():
        for sign in (1, -1):  # proper rotation, then rotation with inversion
            q = sign * rot
            turned = atoms.copy()
            turned.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
            turned.positions = atoms.positions @ q.T
            e1, _, f1, _ = evaluate(cfg, module, params, turned)
            worst_e = max(worst_e, abs(e1 - e0) / (len(atoms) * spread))
            worst_f = max(worst_f, np.linalg.norm(f1 - f0 @ q.T) / np.linalg.norm(f0))
    print(f"equivariance error (S2 grid {cfg.s2_res_beta}x{cfg.s2_res_alpha}): energy {worst_e:.2e} of the "
          f"per-atom spread, forces {worst_f:.2e}")
    assert worst_e < 0.01 and worst_f < 0.02


def test_s2_mixer_equivariance_error_below_one_percent():
    grid = FacetConfig()  # the default grid, which every model uses unless configured otherwise
    error = model.mixer_equivariance_error(grid.s2_res_beta, grid.s2_res_alpha, grid.s2_quadrature)
    print(f"S2-MLP-Mixer equivariance error ({grid.s2_res_beta}x{grid.s2_res_alpha} {grid.s2_quadrature} grid): "
          f"max {error:.2e}")
    assert error < 0.01


def test_extensive_supercell_energy(tiny_model):
    cfg, module, params = tiny_model
    atoms = sio2_like()
    e1, ea1, f1, w1 = evaluate(cfg, module, params, atoms)
    big = atoms * (2, 2, 2)
    e8, ea8, f8, w8 = evaluate(cfg, module, params, big)
    assert e8 == pytest.approx(8 * e1, rel=1e-10)
    np.testing.assert_allclose(ea8, np.tile(ea1, 8), atol=1e-9)
    np.testing.assert_allclose(w8, 8 * w1, atol=1e-8)


def test_energy_and_forces_continuous_across_r_max(tiny_model):
    cfg, module, params = tiny_model
    r_max = model.cutoff(params, cfg)
    base = Atoms("SiOSi", positions=[[0, 0, 0], [1.6, 0, 0], [0, 1.7, 0]])

    def with_far_atom(d):
        atoms = base + Atoms("O", positions=[[1.6 + d, 0.3, 0.0]])
        atoms.center(vacuum=8.0)
        atoms.pbc = False
        return evaluate(cfg, module, params, atoms)

    dist = lambda d: np.hypot(d, 0.3)  # noqa: E731  distance of the far O from the first O
    d_at = np.sqrt(r_max**2 - 0.3**2)
    inside = with_far_atom(d_at - 1e-4)
    outside = with_far_atom(d_at + 1e-4)
    far = with_far_atom(d_at + 0.2)
    assert dist(d_at - 1e-4) < r_max < dist(d_at + 1e-4)
    assert abs(inside[0] - outside[0]) < 1e-9
    np.testing.assert_allclose(inside[2], outside[2], atol=1e-6)
    # Beyond r_max the neighbour contributes nothing at all (it only feels others).
    assert outside[0] == pytest.approx(far[0], abs=1e-12)


def test_forces_match_finite_differences(tiny_model):
    cfg, module, params = tiny_model
    atoms = sio2_like(seed=3)
    _, _, forces, _ = evaluate(cfg, module, params, atoms)
    h = 1e-5
    for a in (0, 3):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            fd = -(evaluate(cfg, module, params, plus)[0] - evaluate(cfg, module, params, minus)[0]) / (2 * h)
            assert forces[a, c] == pytest.approx(fd, abs=1e-7, rel=1e-6)


def test_virial_matches_finite_strain(tiny_model):
    cfg, module, params = tiny_model
    atoms = sio2_like(seed=4)
    _, _, _, virial = evaluate(cfg, module, params, atoms)
    h = 1e-5
    for i, j in [(0, 0), (1, 1), (0, 1), (1, 2), (2, 0)]:
        energies = []
        for sgn in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sgn * h / 2
            strain[j, i] += sgn * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            energies.append(evaluate(cfg, module, params, strained)[0])
        de_deps = (energies[0] - energies[1]) / (2 * h)
        # A symmetric strain probes the symmetric part of the virial (the
        # antisymmetric part is the S2 grid's tiny rotation-invariance error).
        assert -(virial[i, j] + virial[j, i]) / 2 == pytest.approx(de_deps, abs=1e-7, rel=1e-6)


def test_padding_does_not_change_results(tiny_model):
    cfg, module, params = tiny_model
    atoms = sio2_like()
    vec, s, r = edges(atoms, cfg.graph_cutoff)
    species = species_of(atoms, cfg)
    n = len(atoms)
    # Jitted (one compile per shape; op by op this test took most of a minute).
    energy_and_gradients = jax.jit(lambda *a: model.energy_and_edge_gradients(module, params, *a))
    e, g = energy_and_gradients(vec, s, r, species, np.ones(n))
    pad_atoms, pad_edges = 5, 37
    far = np.tile([[2 * cfg.graph_cutoff, 0.0, 0.0]], (pad_edges, 1))
    vec_p = np.concatenate([vec, far])
    s_p = np.concatenate([s, np.full(pad_edges, n + pad_atoms - 1)])
    r_p = np.concatenate([r, np.full(pad_edges, n + pad_atoms - 1)])
    species_p = np.concatenate([species, np.zeros(pad_atoms, np.int32)])
    mask_p = np.concatenate([np.ones(n), np.zeros(pad_atoms)])
    e_p, g_p = energy_and_gradients(vec_p, s_p, r_p, species_p, mask_p)
    # Equal up to float64 summation order (array sizes change how XLA vectorises).
    np.testing.assert_allclose(np.asarray(e_p[:n]), np.asarray(e), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(g_p[: len(s)]), np.asarray(g), rtol=1e-12, atol=1e-13)
    assert float(jnp.abs(g_p[len(s):]).max()) == 0.0
