"""The Facet network, readable top to bottom.

Pure functions for the radial pieces (Bessel basis, envelope, degree
normalisation), then the blocks (convolution, S2-MLP-Mixer, layer norm with
layer scale and residual), then the model and the energy/derivative helpers
every runtime uses.

Deviations from the paper's reference code, made so that MD is correct (see
README "Where we depart from the paper"):
* the graph is every neighbour within a radius, not the k nearest neighbours
  (a k-NN graph makes the energy jump when neighbour ranks change);
* the energy is a sum of per-atom energies, E = sum_i eps_i, with a
  species-wise shift and scale and a global scale inside eps_i, so the model
  is extensive and runs under domain decomposition;
* vectors are odd (1o) and the edge spherical harmonics carry their true
  parity, so the model is equivariant under reflections too (E(3), not only
  SO(3));
* the readout has no dropout (inference must be deterministic).
"""

from __future__ import annotations

import functools
import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facet.config import FacetConfig
from facet.errors import ConfigError
from facet.tensor_product import output_irreps, species_message_sum, weighted_message_sum

# ---------------------------------------------------------------------------
# Radial pieces (pure functions)
# ---------------------------------------------------------------------------


def bessel_basis(distance: jax.Array, frequencies: jax.Array, r_max: jax.Array) -> jax.Array:
    """sqrt(2/r_max) sin(f_n d) / d for trainable frequencies f_n (1/Å). Shape (E, n).

    e3nn.bessel fixes f_n = n pi / r_max, so it cannot be used here. At d = 0 (padding
    edges) the limit sqrt(2/r_max) f_n is returned, so values and gradients stay finite."""
    d = distance[:, None]
    d_safe = jnp.where(d == 0.0, 1.0, d)
    return jnp.sqrt(2.0 / r_max) * jnp.where(d == 0.0, frequencies[None, :],
                                             jnp.sin(frequencies[None, :] * d_safe) / d_safe)


def polynomial_envelope(x: jax.Array, p: int) -> jax.Array:
    """Smooth cutoff u_p(x), x = d / r_max: u(0)=1; u, u' and u'' vanish at x=1; 0 beyond.

    e3nn's poly_envelope(p - 1, 2) is this polynomial (tests/test_model.py checks it against
    the closed form)."""
    return e3nn.poly_envelope(p - 1, 2)(x)


def average_degree(r_max: jax.Array, radii: jax.Array, values: jax.Array) -> jax.Array:
    """k(r_max): average neighbour count, linearly interpolated (differentiable in r_max)."""
    return jnp.interp(r_max, radii, values)


def r_max_from_raw(raw: jax.Array, graph_cutoff: float) -> jax.Array:
    """Trainable r_max, kept in (0, graph_cutoff) by a sigmoid."""
    return graph_cutoff * jax.nn.sigmoid(raw)


def r_max_raw_init(r_max: float, graph_cutoff: float) -> float:
    if not 0.0 < r_max < graph_cutoff:
        raise ConfigError(f"r_max_init={r_max} must lie in (0, graph_cutoff={graph_cutoff})")
    q = r_max / graph_cutoff
    return math.log(q / (1.0 - q))


# ---------------------------------------------------------------------------
# Irreps helpers
# ---------------------------------------------------------------------------


def pad_or_truncate(x: e3nn.IrrepsArray, irreps_out: e3nn.Irreps) -> e3nn.IrrepsArray:
    """The residual branch: x reshaped to irreps_out, missing channels zero."""
    x = x.regroup()
    blocks = []
    lead = x.shape[:-1]
    for mul, ir in irreps_out:
        part = x.filter(keep=[ir])
        if part.irreps.num_irreps == 0:
            blocks.append(jnp.zeros(lead + (mul * ir.dim,), x.dtype))
            continue
        arr = part.array.reshape(lead + (part.irreps.num_irreps, ir.dim))
        have = arr.shape[-2]
        if have >= mul:
            arr = arr[..., :mul, :]
        else:
            arr = jnp.concatenate([arr, jnp.zeros(lead + (mul - have, ir.dim), x.dtype)], axis=-2)
        blocks.append(arr.reshape(lead + (mul * ir.dim,)))
    return e3nn.IrrepsArray(irreps_out, jnp.concatenate(blocks, axis=-1))


def scale_irreps(x: e3nn.IrrepsArray, scales: jax.Array) -> e3nn.IrrepsArray:
    """Multiply every irrep of x by its own scalar: scales has shape (..., x.irreps.num_irreps).

    Equal to `x * scales` in e3nn-jax, which goes through a Clebsch-Gordan
    einsum that XLA:CPU runs ~20x slower than this broadcast multiply."""
    per_component = jnp.repeat(scales, np.asarray([ir.dim for mul, ir in x.irreps for _ in range(mul)]),
                               axis=-1, total_repeat_length=x.irreps.dim)
    return e3nn.IrrepsArray(x.irreps, x.array * per_component)


class EquivariantLayerNorm(nn.Module):
    """Layer norm with scalars centred and RMS-normalised, l>0 jointly RMS-normalised,
    then a learned per-channel scale (the layer scale; FacetConfig.layer_scale_init)."""

    eps: float = 1e-6
    vector_eps: float = 0.1
    scale_init: float = 0.0

    @nn.compact
    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        x = x.regroup()
        scalars = x.filter(keep="0e")
        vectors = x.filter(drop="0e")
        parts = []
        if scalars.irreps.dim > 0:
            s = scalars.array
            s = s - jnp.mean(s, axis=-1, keepdims=True)
            s = s * jax.lax.rsqrt(jnp.mean(s**2, axis=-1, keepdims=True) + self.eps)
            parts.append(e3nn.IrrepsArray(scalars.irreps, s))
        if vectors.irreps.dim > 0:
            v = vectors.array
            # 'component' normalisation: mean square over all l>0 components.
            v = v * jax.lax.rsqrt(jnp.mean(v**2, axis=-1, keepdims=True) + self.vector_eps)
            parts.append(e3nn.IrrepsArray(vectors.irreps, v))
        y = e3nn.concatenate(parts).regroup()
        scale = self.param("layer_scale", nn.initializers.constant(self.scale_init), (y.irreps.num_irreps,), y.dtype)
        return scale_irreps(y, scale)


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


class Filter(nn.Module):
    """The kernel of the linear radial filter (the parameters of a bias-free nn.Dense)."""

    features: int

    @nn.compact
    def __call__(self, num_basis: int) -> jax.Array:
        return self.param("kernel", nn.initializers.lecun_normal(), (num_basis, self.features), jnp.float32)


class Convolution(nn.Module):
    """Clebsch-Gordan tensor-product convolution with a linear ("spline") filter.

    m_e = (h_s (x) Y(r_e)) * W(d_e),  W(d) = Linear(Bessel(d)) * u(d / r_max)
    h'_r = Linear(sum_e m_e / k(r_max)^p) + Linear(h_r)
    """

    irreps_out: e3nn.Irreps

    @nn.compact
    def __call__(self, h, sh, radial, envelope, senders, receivers, norm, species_table=None, species=None,
                 num_receivers=None):
        irreps_out = e3nn.Irreps(self.irreps_out)
        filter_ir_out = [ir for _, ir in irreps_out]
        num_paths = output_irreps(h.irreps, sh.irreps, filter_ir_out).num_irreps
        # One weight per tensor-product output channel: a bias-free linear map of
        # the radial basis (the "spline" filter); the envelope makes it vanish
        # smoothly at r_max. The map is applied path by path inside the sum.
        kernel = Filter(num_paths, name="filter")(radial.shape[-1]).astype(radial.dtype)
        # sum_e (W(d_e) * u(d_e)) * (h_s (x) Y_e) (see facet.tensor_product). When h is
        # the species embedding (first layer), the same sum is taken per sender species.
        weighted = radial * envelope[:, None]
        if species_table is not None:
            aggregated = species_message_sum(species_table.astype(h.dtype), species, senders, receivers, sh,
                                             weighted, kernel, filter_ir_out, num_receivers)
        else:
            aggregated = weighted_message_sum(h, senders, receivers, sh, weighted, kernel, filter_ir_out,
                                              num_receivers)
        aggregated = aggregated / norm
        out = e3nn.flax.Linear(irreps_out, force_irreps_out=True, name="message_linear")(aggregated)
        own = h if num_receivers is None else h[:num_receivers]
        return out + e3nn.flax.Linear(irreps_out, force_irreps_out=True, name="self_connection")(own)


@functools.lru_cache(maxsize=None)
def s2_grid_matrices(lmax: int, res_beta: int, res_alpha: int,
                     quadrature: str = "soft") -> tuple[np.ndarray, np.ndarray]:
    """Matrices of e3nn-jax's to_s2grid / from_s2grid ("soft" or "gausslegendre") for irreps
    0e+1o+2e+...: coefficients (dim) -> grid values (beta*alpha) and back.

    Both transforms are linear, so sampling them once on the identity gives the
    exact same map as calling them, and lets the mixer run as two matmuls.
    Computed once, in float64. e3nn's SOFT quadrature weights pass through a NaN
    that it then discards, so jax's NaN checks (if the caller has them on) stay off here."""
    with jax.enable_x64(True), jax.debug_nans(False):
        return _s2_grid_matrices(lmax, res_beta, res_alpha, quadrature)


def _s2_grid_matrices(lmax, res_beta, res_alpha, quadrature):
    irreps = e3nn.s2_irreps(lmax, p_val=1, p_arg=-1)
    npts = res_beta * res_alpha

    def transforms():
        eye = e3nn.IrrepsArray(irreps, np.eye(irreps.dim))
        grid = e3nn.to_s2grid(eye, res_beta, res_alpha, quadrature=quadrature, fft=False, p_val=1, p_arg=-1)
        signals = e3nn.SphericalSignal(
            np.eye(npts).reshape(npts, res_beta, res_alpha), quadrature=quadrature, p_val=1, p_arg=-1
        )
        return grid.grid_values, e3nn.from_s2grid(signals, irreps, fft=False).array

    # One compiled program, run at once even inside a model being traced: op by op (as
    # under ensure_compile_time_eval) the transforms and the tensor product's coefficients
    # compiled about 250 small programs; Facet-Small's initialisation took 22.2 s, 17.5 s so.
    to_grid, from_grid = jax.jit(transforms).lower().compile()()
    to_grid = np.asarray(to_grid).reshape(irreps.dim, npts)
    return to_grid.astype(np.float64), np.asarray(from_grid).astype(np.float64)


class S2MLPMixer(nn.Module):
    """Self-interaction: irreps -> spherical grid -> per-head MLP per grid point -> irreps.

    Scalars of the input bypass the grid and are concatenated before the final
    linear projection (treated separately, following EquiformerV2)."""

    irreps_out: e3nn.Irreps
    channels: int
    heads: int
    hidden: int
    lmax: int
    res_beta: int
    res_alpha: int
    quadrature: str = "soft"

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        grid_irreps = e3nn.s2_irreps(self.lmax, p_val=1, p_arg=-1)
        x = e3nn.flax.Linear(self.channels * grid_irreps, name="up")(h)
        x = x.mul_to_axis(self.channels).array  # (N, C, dim)
        to_grid, from_grid = s2_grid_matrices(self.lmax, self.res_beta, self.res_alpha, self.quadrature)
        to_grid = jnp.asarray(to_grid, x.dtype)
        from_grid = jnp.asarray(from_grid, x.dtype)
        n = x.shape[0]
        per_head = self.channels // self.heads
        grid = jnp.einsum("ncj,jg->ngc", x, to_grid)  # (N, G, C)
        grid = grid.reshape(n, grid.shape[1], self.heads, per_head)
        # The same MLP for every head and grid point: equivariant up to grid aliasing.
        grid = nn.Dense(self.hidden, use_bias=False, name="mlp_in")(grid)
        grid = jax.nn.silu(grid)
        grid = nn.Dense(per_head, use_bias=False, name="mlp_out")(grid)
        grid = grid.reshape(n, grid.shape[1], self.channels)
        y = jnp.einsum("ngc,gj->ncj", grid, from_grid)
        y = e3nn.IrrepsArray(grid_irreps, y).axis_to_mul()
        y = e3nn.concatenate([y, h.filter(keep="0e")]).regroup()
        return e3nn.flax.Linear(self.irreps_out, name="down")(y)


def mixer_equivariance_error(res_beta: int, res_alpha: int, quadrature: str = "soft", rotations: int = 5) -> float:
    """Largest relative error |mixer(R x) - R mixer(x)| / |R mixer(x)| of a randomly initialised
    S2MLPMixer (16x0e+8x1o+8x2e, 32 nodes) over random rotations: the grid's aliasing."""
    irreps = e3nn.Irreps("16x0e+8x1o+8x2e")
    mixer = S2MLPMixer(irreps, channels=16, heads=2, hidden=8, lmax=2, res_beta=res_beta, res_alpha=res_alpha,
                       quadrature=quadrature)
    x = e3nn.normal(irreps, jax.random.key(0), (32,))
    params = mixer.init(jax.random.key(1), x)
    errors = []
    for angles in np.random.default_rng(2).uniform(0, 2 * np.pi, size=(rotations, 3)):
        y_rot = mixer.apply(params, x.transform_by_angles(*angles))
        rot_y = mixer.apply(params, x).transform_by_angles(*angles)
        errors.append(float(jnp.linalg.norm(y_rot.array - rot_y.array) / jnp.linalg.norm(rot_y.array)))
    return max(errors)


class ScalarMLP(nn.Module):
    """The last layer's self-interaction: a plain 2-layer MLP on scalars."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        x = jax.nn.silu(nn.Dense(self.hidden, name="dense_0")(h.array))
        x = nn.Dense(self.out, name="dense_1")(x)
        return e3nn.IrrepsArray(f"{self.out}x0e", x)


class Residual(nn.Module):
    """h + LayerScale * LayerNorm(block(h)), the input zero-padded to the output irreps."""

    eps: float
    vector_eps: float
    scale_init: float = 0.0

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray, out: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        out = out.regroup()
        norm = EquivariantLayerNorm(self.eps, self.vector_eps, self.scale_init, name="norm")
        return pad_or_truncate(h, out.irreps) + norm(out)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


class Facet(nn.Module):
    """Per-atom energies from edge vectors: see export/README.md for the contract."""

    config: FacetConfig

    @nn.compact
    def __call__(self, edge_vectors, senders, receivers, species, features=None, *, stage=None, num_receivers=None):
        """Per-atom energies (N,). With ``stage=k`` only message-passing layer k runs (the
        multi-rank feature exchange, facet.stages): layers k < num_layers - 1 return the node
        features (R, feature_size) from ``features`` (the previous layer's, (N, feature_size);
        None for k = 0), the last layer returns the per-atom energies (R,). R = num_receivers:
        only the first R nodes receive messages and are computed (the atoms a rank owns;
        every receiver must be < R); the rest only send."""
        cfg = self.config
        if not cfg.elements:
            raise ConfigError("FacetConfig.elements is empty: the model needs its element list")
        if len(cfg.degree_radii) < 2:
            raise ConfigError("FacetConfig.degree_radii/degree_values are not set: compute them "
                             "on the training set (facet.graph.average_degree_table)")
        num_species = len(cfg.elements)
        dtype = edge_vectors.dtype

        r_max = r_max_from_raw(
            self.param("r_max_raw", nn.initializers.constant(r_max_raw_init(cfg.r_max_init, cfg.graph_cutoff)), ()),
            cfg.graph_cutoff,
        ).astype(dtype)
        frequencies = self.param(
            "bessel_frequencies",
            lambda key: jnp.arange(1, cfg.num_bessel + 1, dtype=jnp.float32) * math.pi / cfg.r_max_init,
        ).astype(dtype)

        distance = jnp.linalg.norm(edge_vectors, axis=-1)
        radial = bessel_basis(distance, frequencies, r_max)
        envelope = polynomial_envelope(distance / r_max, cfg.envelope_exponent)
        sh = e3nn.spherical_harmonics(
            e3nn.s2_irreps(cfg.sh_lmax, p_val=1, p_arg=-1), edge_vectors, normalize=True, normalization="component"
        )
        norm = average_degree(
            r_max, jnp.asarray(cfg.degree_radii, dtype), jnp.asarray(cfg.degree_values, dtype)
        ) ** cfg.degree_exponent

        embed = nn.Embed(num_species, cfg.embedding_channels, name="embedding")
        conv_args = (sh, radial, envelope, senders, receivers, norm)
        residual = functools.partial(Residual, cfg.layer_norm_eps, cfg.vector_norm_eps, cfg.layer_scale_init)

        hidden = e3nn.Irreps(cfg.hidden_irreps)
        last = cfg.num_equivariant_layers
        layers = range(last + 1) if stage is None else range(stage, stage + 1)
        if stage is not None and not 0 <= stage <= last:
            raise ConfigError(f"stage {stage} of a model with {last + 1} message-passing layers")
        if layers[0] == 0:
            h = e3nn.IrrepsArray(f"{cfg.embedding_channels}x0e", embed(species))
        else:
            h = e3nn.IrrepsArray(feature_irreps(cfg), features)
        own = (lambda x: x) if num_receivers is None else (lambda x: x[:num_receivers])
        for layer in (k for k in layers if k < last):
            # The first layer's senders carry only their species embedding: its messages
            # are summed per species (exact, and far cheaper; see species_message_sum).
            first = dict(species_table=embed.embedding, species=species) if layer == 0 else {}
            out = Convolution(hidden, name=f"conv_{layer}")(h, *conv_args, **first, num_receivers=num_receivers)
            h = residual(name=f"conv_{layer}_residual")(own(h), out)
            out = S2MLPMixer(
                hidden, cfg.mixer_channels, cfg.mixer_heads, cfg.mixer_hidden,
                cfg.sh_lmax, cfg.s2_res_beta, cfg.s2_res_alpha, cfg.s2_quadrature, name=f"mixer_{layer}",
            )(h)
            h = residual(name=f"mixer_{layer}_residual")(h, out)
        if layers[-1] < last:
            return h.array

        scalars = e3nn.Irreps(f"{cfg.scalar_channels}x0e")
        out = Convolution(scalars, name=f"conv_{last}")(h, *conv_args, num_receivers=num_receivers)
        h = residual(name=f"conv_{last}_residual")(own(h), out)
        out = ScalarMLP(cfg.scalar_mlp_hidden, cfg.scalar_channels, name="scalar_mlp")(h)
        h = residual(name="scalar_mlp_residual")(h, out)

        # Readout: eps_i = shift[z_i] + global_scale * scale[z_i] * (w . h_i).
        raw = nn.Dense(1, use_bias=False, name="readout")(h.array)[:, 0]
        species_scale = self.param("species_scale", nn.initializers.ones, (num_species,))
        species_shift = self.param("species_shift", nn.initializers.zeros, (num_species,))
        global_scale = self.param("global_scale", nn.initializers.ones, ())
        z = own(species)
        return species_shift[z].astype(dtype) + (global_scale * species_scale[z]).astype(dtype) * raw


def feature_irreps(config: FacetConfig) -> e3nn.Irreps:
    """The node features between two message-passing layers (what ranks exchange)."""
    return e3nn.Irreps(config.hidden_irreps).regroup()


def init(module: Facet, key: jax.Array, num_atoms: int = 3, num_edges: int = 6):
    """Initialise parameters on a tiny dummy graph (shapes do not depend on it)."""
    vectors = jnp.asarray(np.random.default_rng(0).normal(size=(num_edges, 3)), jnp.float32)
    senders = jnp.arange(num_edges, dtype=jnp.int32) % num_atoms
    receivers = (senders + 1) % num_atoms
    species = jnp.zeros((num_atoms,), jnp.int32)
    return jax.jit(module.init)(key, vectors, senders, receivers, species)


def count_parameters(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def cutoff(params, config: FacetConfig) -> float:
    """The model's cutoff, its (trained) r_max: every edge longer than this contributes exactly
    zero. The graph_cutoff (config) is the radius training graphs are built to, >= cutoff."""
    return float(r_max_from_raw(params["params"]["r_max_raw"], config.graph_cutoff))


def cast_params(params, dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def set_readout(params, species_shift, global_scale, species_scale=None):
    """Install the readout initialisation fitted on the training set."""
    p = jax.tree.map(lambda x: x, params)  # shallow structural copy
    inner = dict(p["params"])
    inner["species_shift"] = jnp.asarray(species_shift, jnp.float32)
    inner["global_scale"] = jnp.asarray(global_scale, jnp.float32)
    if species_scale is not None:
        inner["species_scale"] = jnp.asarray(species_scale, jnp.float32)
    return {**p, "params": inner}


# ---------------------------------------------------------------------------
# Energies and derivatives (the runtime contract)
# ---------------------------------------------------------------------------


def energy_and_edge_gradients(module, params, edge_vectors, senders, receivers, species, energy_mask):
    """Per-atom energies and dE/d(edge vector) of E = sum_i mask_i eps_i."""

    def masked_total(vectors):
        energies = module.apply(params, vectors, senders, receivers, species)
        return jnp.sum(energies * energy_mask), energies

    (_, energies), grads = jax.value_and_grad(masked_total, has_aux=True)(edge_vectors)
    return energies, grads


def forces_and_virial(edge_vectors, senders, receivers, dE_dedge, num_atoms: int, edge_graph=None,
                      num_graphs: int | None = None):
    """Forces (N, 3) in eV/Å and the virial in eV from dE/d(edge vector): F_s -= g_e, F_r += g_e,
    W = -sum_e r_e (x) g_e (export/README.md). Training uses it; the numpy and C++ runtimes repeat it
    and are tested against it. With edge_graph (each edge's structure) and num_graphs, the virial
    is summed per structure, (G, 3, 3); otherwise it is one (3, 3)."""
    forces = (jax.ops.segment_sum(dE_dedge, receivers, num_atoms)
              - jax.ops.segment_sum(dE_dedge, senders, num_atoms))
    if edge_graph is None:
        return forces, -jnp.einsum("ei,ej->ij", edge_vectors, dE_dedge)
    edge_virial = -jnp.einsum("ei,ej->eij", edge_vectors, dE_dedge)
    return forces, jax.ops.segment_sum(edge_virial, edge_graph, num_graphs)
