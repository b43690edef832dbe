"""Channel-wise ("uvu") Clebsch-Gordan tensor-product convolution, laid out for XLA:CPU.

`weighted_message_sum` computes exactly scatter_sum(e3nn.tensor_product(x[senders],
sh, filter_ir_out=...) * weights, receivers) (same output irreps, order and
normalisation: the coefficients are read off e3nn-jax itself), but in a
different order. e3nn contracts every path as an (edges*channels, i*j) @ (i*j, k)
matrix product with k <= 5, which XLA:CPU runs at a small fraction of its speed
and which dominated Facet's step time. Here each path contracts the spherical
harmonics with its coefficients first (a small (i, k) matrix per edge), then
meets the channels in one broadcast multiply-and-sum that XLA fuses.
"""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def _coefficients(ir_in: str, irreps_sh: str, filter_ir_out: tuple[str, ...]):
    """C[i, j, K] of e3nn's product of one `ir_in` with `irreps_sh`, and the output irreps.

    The product is bilinear, so evaluating it on pairs of unit vectors gives
    its coefficients exactly (normalisation included)."""
    ir = e3nn.Irrep(ir_in)
    sh = e3nn.Irreps(irreps_sh)
    def product():
        x = e3nn.IrrepsArray(e3nn.Irreps([(1, ir)]),
                             np.broadcast_to(np.eye(ir.dim)[:, None, :], (ir.dim, sh.dim, ir.dim)))
        y = e3nn.IrrepsArray(sh, np.broadcast_to(np.eye(sh.dim)[None], (ir.dim, sh.dim, sh.dim)))
        return e3nn.tensor_product(x, y, filter_ir_out=list(filter_ir_out))

    with jax.enable_x64(True):  # one program run at once, even inside a trace (see model.s2_grid_matrices)
        out = jax.jit(product).lower().compile()()
        coeffs = np.asarray(out.array, dtype=np.float64)
    return coeffs, out.irreps


def output_irreps(irreps_in: e3nn.Irreps, irreps_sh: e3nn.Irreps, filter_ir_out) -> e3nn.Irreps:
    """The (regrouped) irreps of the product `weighted_message_sum` sums, as e3nn would."""
    return jax.eval_shape(lambda: e3nn.tensor_product(e3nn.zeros(irreps_in, ()), e3nn.zeros(irreps_sh, ()),
                                                      filter_ir_out=filter_ir_out)).irreps


@functools.lru_cache(maxsize=None)
def _path_plan(irreps_in: str, irreps_sh: str, filter_ir_out: tuple[str, ...]):
    """Paths (block, l_sh -> l_out) of the product in e3nn's regrouped output order.

    Returns (irreps_out, paths); each path is (block index, sh slice, C[i, j, k],
    multiplicity, position of its first output irrep among irreps_out's irreps)."""
    x_irreps = e3nn.Irreps(irreps_in)
    sh_irreps = e3nn.Irreps(irreps_sh)
    filt = [e3nn.Irrep(ir) for ir in filter_ir_out]
    raw = []  # e3nn's order before regrouping: block, then sh irrep, then output irrep
    assert all(mul == 1 for mul, _ in sh_irreps), "edge spherical harmonics have multiplicity 1"
    for b, (mul, ir1) in enumerate(x_irreps):
        sh_start = 0
        for _, ir2 in sh_irreps:
            sh_slice = (sh_start, sh_start + ir2.dim)
            sh_start += ir2.dim
            coeffs, out_irreps = _coefficients(str(ir1), f"1x{ir2}", tuple(filter_ir_out))
            k = 0
            for m_out, ir_out in out_irreps:
                assert m_out == 1
                if ir_out in filt:
                    raw.append((ir_out, b, sh_slice, coeffs[:, :, k:k + ir_out.dim], mul))
                k += ir_out.dim
    order = sorted(range(len(raw)), key=lambda n: (raw[n][0], n))  # regroup: stable sort by output irrep
    paths, position = [], 0
    for n in order:
        ir_out, b, sh_slice, c, mul = raw[n]
        paths.append((b, sh_slice, c, mul, position, ir_out))
        position += mul
    irreps_out = e3nn.Irreps([(p[3], p[5]) for p in paths]).regroup() if paths else e3nn.Irreps("")
    return irreps_out, tuple(paths)


def weighted_message_sum(x: e3nn.IrrepsArray, senders: jax.Array, receivers: jax.Array, sh: e3nn.IrrepsArray,
                         radial: jax.Array, kernel: jax.Array, filter_ir_out,
                         num_receivers=None) -> e3nn.IrrepsArray:
    """sum over edges e into each node of w[e] * (x[senders[e]] (x) sh[e]), w = radial @ kernel.

    Equal to scatter_sum(e3nn.tensor_product(x[senders], sh, filter_ir_out) * (radial @ kernel),
    receivers) with one weight per output irrep (radial: (E, B), kernel: (B, num_irreps)),
    but computed path by path: each path takes its own columns of the kernel
    (so no (E, num_irreps) weight array is sliced, whose derivative XLA builds
    by padding every slice back to full size), then one fused multiply-and-sum
    over its input components and a scatter-add. Every intermediate stays in a
    layout XLA:CPU handles well, in the forward pass and in both derivatives.
    The sums are over the first num_receivers nodes (default all: the multi-rank
    stages compute the atoms a rank owns only).
    """
    x = x.regroup()
    filter_ir_out = tuple(str(e3nn.Irrep(ir)) for ir in filter_ir_out)
    irreps_out, paths = _path_plan(str(x.irreps), str(sh.irreps), filter_ir_out)
    num_nodes = x.shape[0] if num_receivers is None else num_receivers
    num_edges = sh.shape[0]
    gathered = [None if chunk is None else chunk[senders] for chunk in x.chunks]  # (E, U, i) per block
    pieces = []
    for b, (s0, s1), c, mul, position, ir_out in paths:
        # A[e, i, k] = sum_j C[i, j, k] sh[e, j]; out[e, u, k] = w[e, u] sum_i x[e, u, i] A[e, i, k]
        a = jnp.einsum("ej,ijk->eik", sh.array[:, s0:s1], jnp.asarray(c, sh.dtype))
        w = radial @ kernel[:, position:position + mul]
        xe = gathered[b]
        if xe is None:
            pieces.append(jnp.zeros((num_nodes, mul * ir_out.dim), sh.dtype))
            continue
        msg = jnp.sum(xe[:, :, :, None] * a[:, None, :, :], axis=2) * w[:, :, None]
        summed = jax.ops.segment_sum(msg.reshape(num_edges, mul * ir_out.dim), receivers, num_nodes)
        pieces.append(summed)
    if not pieces:
        return e3nn.zeros(irreps_out, (num_nodes,), sh.dtype)
    return e3nn.IrrepsArray(irreps_out, jnp.concatenate(pieces, axis=-1))


def species_message_sum(table: jax.Array, species: jax.Array, senders: jax.Array, receivers: jax.Array,
                        sh: e3nn.IrrepsArray, radial: jax.Array, kernel: jax.Array, filter_ir_out,
                        num_receivers=None) -> e3nn.IrrepsArray:
    """weighted_message_sum for a first layer whose features are species embeddings.

    When x[s] = table[species[s]] (scalars only, no angular part), every message is
    table[z_s, u] * w[e, u] * A[e, k] with w = radial @ kernel, so the sum over the
    edges into node n regroups exactly by the sender's species z:

        out[n, u, k] = sum_{z, b} table[z, u] kernel[b, u] D[n, z, b, k],
        D[n, z, b, k] = sum_{e -> n, z_s = z} radial[e, b] A[e, k],

    a per-species density of radial basis x spherical harmonics. D costs one scatter
    of B * dim(sh) numbers per edge instead of (channels x components) per edge, and
    the channels meet it in one matrix product per node."""
    filter_ir_out = tuple(str(e3nn.Irrep(ir)) for ir in filter_ir_out)
    num_species, channels = table.shape
    irreps_out, paths = _path_plan(f"{channels}x0e", str(sh.irreps), filter_ir_out)
    num_nodes = species.shape[0] if num_receivers is None else num_receivers
    num_basis = radial.shape[1]
    slot = receivers * num_species + species[senders]  # (node, sender species) of each edge
    pieces = []
    for _, (s0, s1), c, mul, position, ir_out in paths:
        a = sh.array[:, s0:s1] @ jnp.asarray(c[0], sh.dtype)  # (E, k): the scalar input has i = 1
        density = jax.ops.segment_sum((radial[:, :, None] * a[:, None, :]).reshape(-1, num_basis * ir_out.dim),
                                      slot, num_nodes * num_species)
        density = density.reshape(num_nodes, num_species * num_basis, ir_out.dim)
        weights = (table[:, None, :] * kernel[None, :, position:position + mul]).reshape(-1, mul)  # (z*b, u)
        out = jnp.einsum("nqk,qu->nuk", density, weights.astype(density.dtype))
        pieces.append(out.reshape(num_nodes, mul * ir_out.dim))
    return e3nn.IrrepsArray(irreps_out, jnp.concatenate(pieces, axis=-1))
