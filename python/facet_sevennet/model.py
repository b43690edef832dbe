"""The SevenNet (NequIP-style) architecture in JAX/flax, as SevenNet-0 uses it.

One interaction layer t, on node features x (irreps ``config.irreps[t]``)::

    sc  = Linear_sc(x)                              -> gate-input irreps
    x   = Linear_1(x)
    m_e = TP_uvu(x_s, Y(r_e); w_e),  w_e = R_t(|r_e|) -> per-path weights
    x   = Linear_2(sum_{e -> r} m_e / D_t) + sc
    x   = Gate(x)                                   -> irreps[t + 1]

then ``eps_i = shift[z_i] + scale[z_i] * Readout(x_i)``.  Everything follows
e3nn's (torch) normalisation conventions, so a checkpoint's weights are used
unchanged: ``Linear`` divides by sqrt(fan-in) per output irrep, the tensor
product path (l1, l2 -> l3) carries sqrt(2 l3 + 1) times the Clebsch-Gordan
coefficients, the radial MLP divides by sqrt(fan-in) per layer, and every
activation is multiplied by its second-moment normalisation constant.  Those
constants are estimated by e3nn (torch) with a fixed random sample, so they
are stored in the config (``act_constants``) instead of being recomputed.

Two variants share this module (see ``SevenNetConfig``):

* the original: radial filter ``R_t = MLP(Bessel(d) * u(d))`` (8 -> 64 -> 64
  -> paths, SiLU, no bias), messages divided by a fixed ``D_t``
  (``denominators``), a two-layer linear readout;
* the streamlined one (``streamlined=True``): ``R_t(d) = u(d) * Bessel(d) @ A_t``
  (linear in 8 Bessel functions under the envelope), messages divided by
  ``k(r_max) ** p`` (Facet's degree normalisation, with a trainable r_max),
  and the readout collapsed to one linear map.

Node features are dicts ``{irrep: (N, mul, 2l + 1) array}``; the edge
convention is Facet's (``export/README.md``): ``r_e = x_sender - x_receiver``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facet import model as facet_model
from facet.config import from_dict as config_from_dict

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SevenNetConfig:
    """Architecture (and fixed constants) of a SevenNet model.  Frozen and
    hashable, so the module can be a static jit argument.  Defaults: SevenNet-0."""

    # Element symbols in model order (species index i is elements[i]).
    elements: tuple[str, ...] = ()
    cutoff: float = 5.0
    # XPLOR envelope: 1 below cutoff_on, smooth switch to 0 at the cutoff.
    cutoff_on: float = 4.5
    num_bessel: int = 8
    # Node irreps before layer 0 and after each layer (len = num_layers + 1).
    irreps: tuple[str, ...] = (
        "128x0e", "128x0e+64x1e+32x2e", "128x0e+64x1e+32x2e",
        "128x0e+64x1e+32x2e", "128x0e+64x1e+32x2e", "128x0e",
    )
    sh_lmax: int = 2
    # False: SO(3) model, every irrep even (SevenNet-0); True: O(3), Y_l has parity (-1)^l.
    parity: bool = False
    radial_hidden: tuple[int, ...] = (64, 64)
    # Fixed message divisor per layer (the original model).
    denominators: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    readout_hidden: int = 64
    # e3nn's normalize2mom constants, {"silu": c, ...} (torch's estimates).
    act_constants: tuple[tuple[str, float], ...] = (("silu", 1.6791767923989418),)
    radial_act: str = "silu"
    scalar_act: str = "silu"
    gate_act: str = "silu"
    # --- streamlined variant -------------------------------------------------
    streamlined: bool = False
    # Trainable r_max lives in (0, graph_cutoff); the envelope's cutoff_on scales with it.
    graph_cutoff: float = 5.0
    degree_exponent: float = 0.7
    degree_radii: tuple[float, ...] = ()
    degree_values: tuple[float, ...] = ()
    dtype: str = "float32"

    @property
    def num_layers(self) -> int:
        return len(self.irreps) - 1

    @property
    def act_constant(self) -> dict[str, float]:
        return dict(self.act_constants)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SevenNetConfig":
        return config_from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# ---------------------------------------------------------------------------
# Irreps bookkeeping (static, from the config)
# ---------------------------------------------------------------------------


def irreps_list(irreps: str) -> list[tuple[int, int, int]]:
    """'128x0e+64x1e' -> [(128, 0, 1), (64, 1, 1)] (mul, l, parity), simplified and sorted."""
    out = []
    for mul, ir in e3nn.Irreps(irreps).regroup():
        if mul > 0:
            out.append((mul, ir.l, ir.p))
    return out


def ir_key(l: int, p: int) -> str:
    return f"{l}{'e' if p == 1 else 'o'}"


def sh_irreps(config: SevenNetConfig) -> list[tuple[int, int]]:
    """(l, p) of the edge spherical harmonics."""
    return [(l, (-1) ** l if config.parity else 1) for l in range(config.sh_lmax + 1)]


@dataclass(frozen=True)
class Path:
    """One 'uvu' tensor-product path of a convolution: x[l1] (x) Y[l2] -> out[l3]."""

    ir_in: tuple[int, int]
    ir_sh: tuple[int, int]
    ir_out: tuple[int, int]
    mul: int
    weight_start: int  # first column of this path in the radial filter output


def conv_paths(config: SevenNetConfig, layer: int) -> list[Path]:
    """The convolution paths of a layer, in SevenNet's creation order (which is the
    column order of the radial filter's output in a SevenNet <= 0.10 checkpoint).

    A path exists for every x irrep, every Y_l and every l3 in |l1 - l2|..l1 + l2
    with l3 <= lmax of the layer's output irreps; the last layer keeps only even
    outputs (SevenNet's 'even' parity mode)."""
    x_irreps = irreps_list(config.irreps[layer])
    out_irreps = irreps_list(config.irreps[layer + 1])
    lmax_out = max(l for _, l, _ in out_irreps)
    last = layer == config.num_layers - 1
    paths, start = [], 0
    for mul, l1, p1 in x_irreps:
        for l2, p2 in sh_irreps(config):
            for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                p3 = p1 * p2
                if l3 > lmax_out or (last and p3 != 1):
                    continue
                paths.append(Path((l1, p1), (l2, p2), (l3, p3), mul, start))
                start += mul
    return paths


def conv_output_irreps(paths: Sequence[Path]) -> list[tuple[int, int, int]]:
    """Irreps of the summed messages (paths grouped by output irrep, sorted by (l, p))."""
    muls: dict[tuple[int, int], int] = {}
    for p in paths:
        muls[p.ir_out] = muls.get(p.ir_out, 0) + p.mul
    return [(muls[k], k[0], k[1]) for k in sorted(muls, key=lambda k: (k[0], k[1]))]


def gate_irreps(out_irreps: str) -> tuple[int, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(number of scalars, gated irreps, gate-input irreps) of e3nn's Gate as SevenNet builds it:
    scalars are the l = 0 irreps of the output, one even gate scalar per gated l > 0 irrep;
    the gate input is scalars, gates, gated, regrouped (scalars and gates merge into one 0e)."""
    out = irreps_list(out_irreps)
    scalars = [x for x in out if x[1] == 0]
    gated = [x for x in out if x[1] > 0]
    if any(p != 1 for _, _, p in scalars):
        raise NotImplementedError("odd scalars (0o) are not supported")
    n_scalars = sum(m for m, _, _ in scalars)
    n_gates = sum(m for m, _, _ in gated)
    gate_in = [(n_scalars + n_gates, 0, 1)] if n_scalars + n_gates else []
    return n_scalars, gated, gate_in + gated


def radial_width(config: SevenNetConfig, layer: int) -> int:
    paths = conv_paths(config, layer)
    return paths[-1].weight_start + paths[-1].mul


# ---------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------


def bessel(distance: jax.Array, frequencies: jax.Array, r_max) -> jax.Array:
    """SevenNet's basis (2 / r_max) sin(f_n d) / d: Facet's bessel_basis times sqrt(2 / r_max)."""
    return facet_model.bessel_basis(distance, frequencies, r_max) * jnp.sqrt(2.0 / r_max)


def xplor_envelope(distance: jax.Array, r_on, r_cut) -> jax.Array:
    """XPLOR switch: 1 below r_on, (rc^2 - r^2)^2 (rc^2 + 2 r^2 - 3 ron^2) / (rc^2 - ron^2)^3
    between, exactly 0 (with zero derivative) at and beyond r_cut."""
    r2 = distance**2
    on2, cut2 = r_on**2, r_cut**2
    r2c = jnp.minimum(r2, cut2)  # keeps the unused branch finite
    switch = (cut2 - r2c) ** 2 * (cut2 + 2 * r2c - 3 * on2) / (cut2 - on2) ** 3
    return jnp.where(distance < r_on, 1.0, jnp.where(distance < r_cut, switch, 0.0))


def e3nn_linear(x: dict, weights: dict, out_irreps: Sequence[tuple[int, int, int]]) -> dict:
    """e3nn Linear between regrouped irreps: y[ir] = x[ir] @ W[ir] / sqrt(mul_in[ir])."""
    n = next(iter(x.values())).shape[0]
    dtype = next(iter(x.values())).dtype
    y = {}
    for mul, l, p in out_irreps:
        k = ir_key(l, p)
        if k in weights:
            w = weights[k].astype(dtype)
            y[k] = jnp.einsum("nui,uw->nwi", x[k], w) / math.sqrt(w.shape[0])
        else:
            y[k] = jnp.zeros((n, mul, 2 * l + 1), dtype)
    return y


def linear_weight_shapes(in_irreps, out_irreps) -> dict[str, tuple[int, int]]:
    ins = {(l, p): m for m, l, p in in_irreps}
    return {ir_key(l, p): (ins[(l, p)], m) for m, l, p in out_irreps if (l, p) in ins}


def flatten_features(x: dict) -> jax.Array:
    """(N, dim) in e3nn layout (irreps in order, mul-major within each)."""
    return jnp.concatenate([v.reshape(v.shape[0], -1) for v in x.values()], axis=-1)


@functools.lru_cache(maxsize=None)
def clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """e3nn's real Clebsch-Gordan coefficients (l1, l2 -> l3), float64 numpy (equal to
    e3nn-torch's wigner_3j to ~1e-8, checked by the peer tests)."""
    with jax.ensure_compile_time_eval():
        return np.asarray(e3nn.clebsch_gordan(l1, l2, l3), dtype=np.float64)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def _normal(scale=1.0):
    return lambda key, shape, dtype=jnp.float32: scale * jax.random.normal(key, shape, dtype)


class SevenNet(nn.Module):
    """Per-atom energies from edge vectors (the Facet runtime contract's model part)."""

    config: SevenNetConfig

    def _linear_params(self, name, in_irreps, out_irreps):
        shapes = linear_weight_shapes(in_irreps, out_irreps)
        return {k: self.param(f"{name}_{k}", _normal(), s) for k, s in shapes.items()}

    @nn.compact
    def __call__(self, edge_vectors, senders, receivers, species):
        cfg = self.config
        if not cfg.elements:
            raise ValueError("SevenNetConfig.elements is empty")
        dtype = edge_vectors.dtype
        num_species = len(cfg.elements)
        n_atoms = species.shape[0]
        acts = cfg.act_constant

        def act(name, v):
            fn = {"silu": jax.nn.silu, "tanh": jnp.tanh}[name]
            return fn(v) * acts[name]

        # -- edges ---------------------------------------------------------------
        frequencies = self.param(
            "bessel_frequencies",
            lambda key: jnp.arange(1, cfg.num_bessel + 1, dtype=jnp.float32) * math.pi / cfg.cutoff,
        ).astype(dtype)
        if cfg.streamlined:
            r_max = facet_model.r_max_from_raw(
                self.param("r_max_raw", nn.initializers.constant(
                    facet_model.r_max_raw_init(cfg.cutoff, cfg.graph_cutoff)), ()),
                cfg.graph_cutoff,
            ).astype(dtype)
            r_on = r_max * (cfg.cutoff_on / cfg.cutoff)
        else:
            r_max = jnp.asarray(cfg.cutoff, dtype)
            r_on = jnp.asarray(cfg.cutoff_on, dtype)
        distance = jnp.linalg.norm(edge_vectors, axis=-1)
        basis = bessel(distance, frequencies, r_max)
        envelope = xplor_envelope(distance, r_on, r_max)
        # Y_l does not depend on the parity label: compute them as 0e + 1o + 2e + ...
        sh = e3nn.spherical_harmonics(
            e3nn.s2_irreps(cfg.sh_lmax, p_val=1, p_arg=-1), edge_vectors, normalize=True, normalization="component"
        ).array
        sh_parts = {}
        offset = 0
        for l, p in sh_irreps(cfg):
            sh_parts[(l, p)] = sh[:, offset: offset + 2 * l + 1]
            offset += 2 * l + 1
        if cfg.streamlined:
            norm = facet_model.average_degree(
                r_max, jnp.asarray(cfg.degree_radii, dtype), jnp.asarray(cfg.degree_values, dtype)
            ) ** cfg.degree_exponent

        # -- embedding: e3nn Linear of the one-hot species --------------------------
        x0 = irreps_list(cfg.irreps[0])
        if len(x0) != 1 or x0[0][1] != 0:
            raise NotImplementedError("the initial node irreps must be scalars (e.g. 128x0e)")
        embed = self.param("embedding", _normal(), (num_species, x0[0][0]))
        h = {"0e": (embed[species].astype(dtype) / math.sqrt(num_species))[:, :, None]}
        self.sow("intermediates", "embedding", flatten_features(h))

        # -- interaction layers --------------------------------------------------
        for t in range(cfg.num_layers):
            x_irreps = irreps_list(cfg.irreps[t])
            paths = conv_paths(cfg, t)
            mid_irreps = conv_output_irreps(paths)
            n_scalars, gated, gate_in = gate_irreps(cfg.irreps[t + 1])
            sc = e3nn_linear(h, self._linear_params(f"layer{t}_self_connection", x_irreps, gate_in), gate_in)
            h = e3nn_linear(h, self._linear_params(f"layer{t}_linear_1", x_irreps, x_irreps), x_irreps)

            width = radial_width(cfg, t)
            if cfg.streamlined:
                coeffs = self.param(f"layer{t}_filter", _normal(), (cfg.num_bessel, width)).astype(dtype)
                weights = (basis @ coeffs) * envelope[:, None]
            else:
                z = basis * envelope[:, None]
                sizes = (cfg.num_bessel,) + tuple(cfg.radial_hidden) + (width,)
                for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
                    w = self.param(f"layer{t}_radial_{i}", _normal(), (a, b)).astype(dtype)
                    z = z @ w / math.sqrt(a)
                    if i < len(sizes) - 2:
                        z = act(cfg.radial_act, z)
                weights = z

            # uvu tensor product, one path at a time, grouped by output irrep.
            pieces: dict[tuple[int, int], list] = {}
            gathered = {k: v[senders] for k, v in h.items()}
            for path in paths:
                x_s = gathered[ir_key(*path.ir_in)]  # (E, mul, d1)
                y = sh_parts[path.ir_sh].astype(dtype)  # (E, d2)
                cg = jnp.asarray(clebsch_gordan(path.ir_in[0], path.ir_sh[0], path.ir_out[0]), dtype)
                w = weights[:, path.weight_start: path.weight_start + path.mul]  # (E, mul)
                msg = jnp.einsum("eui,ej,ijk->euk", x_s, y, cg) * math.sqrt(2 * path.ir_out[0] + 1)
                pieces.setdefault(path.ir_out, []).append(msg * w[:, :, None])
            agg, sq = {}, {}
            for _, l, p in mid_irreps:
                msgs = jnp.concatenate(pieces[(l, p)], axis=1)
                agg[ir_key(l, p)] = jax.ops.segment_sum(msgs, receivers, n_atoms)
                if self.is_mutable_collection("intermediates"):
                    sq[ir_key(l, p)] = jax.ops.segment_sum(msgs**2, receivers, n_atoms)
            # Diagnostics (the p estimate): the raw message sums (before the divisor)
            # and the sums of squared messages.
            self.sow("intermediates", f"message_sum_{t}", agg)
            self.sow("intermediates", f"message_sq_sum_{t}", sq)
            divisor = norm if cfg.streamlined else cfg.denominators[t]
            agg = {k: v / divisor for k, v in agg.items()}
            h = e3nn_linear(agg, self._linear_params(f"layer{t}_linear_2", mid_irreps, gate_in), gate_in)
            h = {k: h[k] + sc[k] for k in h}

            # Gate: act(scalars), act(gates) * gated.
            s = h["0e"]
            new = {"0e": act(cfg.scalar_act, s[:, :n_scalars])}
            start = n_scalars
            for mul, l, p in gated:
                gates = act(cfg.gate_act, s[:, start: start + mul])  # (N, mul, 1)
                new[ir_key(l, p)] = h[ir_key(l, p)] * gates
                start += mul
            h = new
            self.sow("intermediates", f"features_{t}", flatten_features(h))

        # -- readout and per-species rescale -------------------------------------
        out = irreps_list(cfg.irreps[-1])
        if len(out) != 1 or out[0][1] != 0:
            raise NotImplementedError("the last layer's irreps must be scalars")
        feat = h["0e"][:, :, 0]
        width = feat.shape[1]
        if cfg.streamlined or cfg.readout_hidden == 0:
            w = self.param("readout", _normal(), (width, 1)).astype(dtype)
            raw = (feat @ w)[:, 0]
        else:
            w1 = self.param("readout_1", _normal(), (width, cfg.readout_hidden)).astype(dtype)
            w2 = self.param("readout_2", _normal(), (cfg.readout_hidden, 1)).astype(dtype)
            raw = ((feat @ w1 / math.sqrt(width)) @ w2 / math.sqrt(cfg.readout_hidden))[:, 0]
        shift = self.param("species_shift", nn.initializers.zeros, (num_species,))
        scale = self.param("species_scale", nn.initializers.ones, (num_species,))
        self.sow("intermediates", "scaled_atomic_energy", raw)
        return shift[species].astype(dtype) + scale[species].astype(dtype) * raw


# ---------------------------------------------------------------------------
# Helpers shared with the converter, the streamliner and the exporter
# ---------------------------------------------------------------------------


def init(config: SevenNetConfig, key=None):
    """Randomly initialised parameters (the shapes are all that matter)."""
    key = jax.random.key(0) if key is None else key
    module = SevenNet(config)
    vectors = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
    senders = jnp.arange(6, dtype=jnp.int32) % 3
    receivers = (senders + 1) % 3
    return module.init(key, vectors, senders, receivers, jnp.zeros(3, jnp.int32))


FIXED_PARAMETERS = ("species_shift", "species_scale")


def count_parameters(params, trainable_only: bool = True) -> int:
    """Parameter count; the per-species shift and scale (fixed in SevenNet-0) are
    excluded unless ``trainable_only=False``."""
    inner = params["params"]
    return int(sum(np.prod(np.shape(v)) for k, v in inner.items()
                   if not (trainable_only and k in FIXED_PARAMETERS)))


def cutoff(params, config: SevenNetConfig) -> float:
    """The model's cutoff: every edge longer than this contributes exactly zero."""
    if config.streamlined:
        return float(facet_model.r_max_from_raw(params["params"]["r_max_raw"], config.graph_cutoff))
    return float(config.cutoff)


def save(path, config: SevenNetConfig, params, info: dict | None = None) -> None:
    """Parameters and config in one .npz (no pickle): arrays under their names, the config as JSON."""
    arrays = {f"params/{k}": np.asarray(v) for k, v in params["params"].items()}
    arrays["config_json"] = np.asarray(config.to_json())
    arrays["info_json"] = np.asarray(json.dumps(info or {}))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load(path) -> tuple[SevenNetConfig, dict, dict]:
    """(config, params, info) saved by ``save``."""
    with np.load(path, allow_pickle=False) as z:
        config = SevenNetConfig.from_dict(json.loads(str(z["config_json"])))
        params = {"params": {k.split("/", 1)[1]: np.asarray(z[k]) for k in z.files if k.startswith("params/")}}
        info = json.loads(str(z["info_json"])) if "info_json" in z.files else {}
    return config, params, info


def graph_cutoff(config: SevenNetConfig) -> float:
    """The radius graphs are built to: graph_cutoff once streamlined (r_max trains), else the cutoff."""
    return config.graph_cutoff if config.streamlined else config.cutoff
