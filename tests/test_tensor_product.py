"""facet.tensor_product against e3nn-jax's own tensor_product (the reference)."""

import e3nn_jax as e3nn
import jax
import numpy as np
import pytest

from facet.tensor_product import weighted_message_sum

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10

CASES = [
    ("16x0e+8x1o+4x2e", ["0e", "1o", "2e"]),  # Facet's hidden layers
    ("16x0e+8x1o+4x2e", ["0e"]),  # the last, scalar-only convolution
    ("16x0e", ["0e", "1o", "2e"]),  # the first convolution (embedding in)
    ("8x0e+4x1o+3x1e+2x2e+1x0o", ["0e", "1o", "2e", "1e"]),  # unsorted, mixed parity
]


def _inputs(irreps, num_nodes=12, num_edges=80):
    x = e3nn.normal(irreps, jax.random.key(1), (num_nodes,)).astype(np.float64)
    vectors = jax.random.normal(jax.random.key(2), (num_edges, 3), dtype=np.float64)
    sh = e3nn.spherical_harmonics("0e+1o+2e", vectors, True, "component")
    senders = jax.random.randint(jax.random.key(3), (num_edges,), 0, num_nodes)
    receivers = jax.random.randint(jax.random.key(4), (num_edges,), 0, num_nodes)
    return x, vectors, sh, senders, receivers


@pytest.mark.parametrize("irreps,filter_ir_out", CASES)
def test_weighted_message_sum_and_its_derivatives_equal_e3nn(irreps, filter_ir_out):
    x, vectors, _, senders, receivers = _inputs(irreps)
    n = x.shape[0]
    num_weights = e3nn.tensor_product(x[:1], e3nn.zeros("0e+1o+2e", (1,)),
                                      filter_ir_out=filter_ir_out).irreps.num_irreps
    radial = jax.random.normal(jax.random.key(5), (len(vectors), 4), dtype=np.float64)
    kernel = jax.random.normal(jax.random.key(7), (4, num_weights), dtype=np.float64)

    def reference(xa, vec, w):
        sh = e3nn.spherical_harmonics("0e+1o+2e", vec, True, "component")
        m = e3nn.tensor_product(e3nn.IrrepsArray(x.irreps, xa)[senders], sh, filter_ir_out=filter_ir_out)
        return e3nn.scatter_sum(m * (radial @ w), dst=receivers, output_size=n)

    def ours(xa, vec, w):
        sh = e3nn.spherical_harmonics("0e+1o+2e", vec, True, "component")
        return weighted_message_sum(e3nn.IrrepsArray(x.irreps, xa), senders, receivers, sh, radial, w, filter_ir_out)

    ref, out = reference(x.array, vectors, kernel), ours(x.array, vectors, kernel)
    assert out.irreps == ref.irreps
    np.testing.assert_allclose(out.array, ref.array, atol=1e-12)

    # First and second derivatives (forces in the training loss need both).
    probe = jax.random.normal(jax.random.key(6), ref.array.shape, dtype=np.float64)

    def scalar(fn):
        return lambda xa, vec, w: (fn(xa, vec, w).array * probe).sum() ** 2

    def force_loss(fn):
        return lambda xa, vec, w: (jax.grad(scalar(fn), argnums=1)(xa, vec, w) ** 2).sum()

    for make in (scalar, force_loss):
        # Jitted: op by op, the second derivatives took up to a minute per case.
        g_ref = jax.jit(jax.grad(make(reference), argnums=(0, 1, 2)))(x.array, vectors, kernel)
        g_out = jax.jit(jax.grad(make(ours), argnums=(0, 1, 2)))(x.array, vectors, kernel)
        for a, b in zip(g_out, g_ref):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * float(np.abs(b).max()))


def test_species_message_sum_equals_the_edge_sum_with_derivatives():
    """The first layer's per-species form is the same function as weighted_message_sum
    on embedded features: values, and derivatives in the embedding table, the edge
    vectors (forces), the radial basis and the filter kernel."""
    from facet.tensor_product import species_message_sum

    num_species, channels, num_nodes, num_edges = 3, 16, 12, 80
    _, vectors, _, senders, receivers = _inputs(f"{channels}x0e", num_nodes, num_edges)
    species = jax.random.randint(jax.random.key(8), (num_nodes,), 0, num_species)
    table = jax.random.normal(jax.random.key(9), (num_species, channels), dtype=np.float64)
    radial = jax.random.normal(jax.random.key(5), (num_edges, 4), dtype=np.float64)
    kernel = jax.random.normal(jax.random.key(7), (4, 3 * channels), dtype=np.float64)
    filter_ir_out = ["0e", "1o", "2e"]

    def edge_sum(t, vec, rad, w):
        sh = e3nn.spherical_harmonics("0e+1o+2e", vec, True, "component")
        x = e3nn.IrrepsArray(f"{channels}x0e", t[species])
        return weighted_message_sum(x, senders, receivers, sh, rad, w, filter_ir_out)

    def per_species(t, vec, rad, w):
        sh = e3nn.spherical_harmonics("0e+1o+2e", vec, True, "component")
        return species_message_sum(t, species, senders, receivers, sh, rad, w, filter_ir_out)

    args = (table, vectors, radial, kernel)
    a, b = edge_sum(*args), per_species(*args)
    assert a.irreps == b.irreps
    np.testing.assert_allclose(np.asarray(b.array), np.asarray(a.array), rtol=1e-12, atol=1e-12)
    probe = jax.random.normal(jax.random.key(10), a.shape, dtype=np.float64)
    grads = [jax.grad(lambda *p, f=f: (f(*p).array * probe).sum(), argnums=(0, 1, 2, 3))(*args)
             for f in (edge_sum, per_species)]
    for ga, gb in zip(*grads):
        np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), rtol=1e-10, atol=1e-11)
