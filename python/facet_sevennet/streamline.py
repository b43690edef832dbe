"""SevenNet-Streamlined: SevenNet-0 with linear radial filters, a collapsed readout and
Facet's degree normalisation; the message-scaling exponent p; brief fine-tuning.

* ``streamline``: every layer's radial MLP R_t(d) = MLP(B(d) u(d)) is replaced by
  the least-squares fit u(d) B(d) @ A_t over a distance grid (B: the model's 8
  Bessel functions with its trained frequencies, u: its XPLOR envelope); the
  readout's two bias-free linear maps become one vector; the fixed divisor D_t
  becomes k(r_max)^p, with k(r) the average neighbour count of a training set
  and r_max trainable.  The factor k(r_c)^p / D_t is folded into A_t, so at
  r_max = r_c the streamlined model differs from the original only by the fit.
* ``message_scaling`` / ``fit_exponent``: how the raw message sums of the
  original model grow with an atom's neighbour count k (|m| ~ k^p).
* ``finetune`` / ``evaluate``: optax training on Facet's padded batches
  (``facet.graph.BatchLoader``, ``facet.losses``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from facet import losses
from facet import model as facet_model
from facet_sevennet.model import SevenNet, SevenNetConfig, bessel, graph_cutoff, radial_width, xplor_envelope

# ---------------------------------------------------------------------------
# Radial filters and their linear fit
# ---------------------------------------------------------------------------


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def edge_basis(config: SevenNetConfig, params, distances) -> np.ndarray:
    """u(d) B(d), shape (n, num_bessel), float64: the original filter's input and the
    streamlined filter's basis."""
    with jax.enable_x64(True):
        d = jnp.asarray(distances, jnp.float64)
        freq = jnp.asarray(_np(params["params"]["bessel_frequencies"]))
        b = bessel(d, freq, jnp.float64(config.cutoff))
        u = xplor_envelope(d, jnp.float64(config.cutoff_on), jnp.float64(config.cutoff))
        return np.asarray(b * u[:, None])


def radial_filter(config: SevenNetConfig, params, layer: int, distances) -> np.ndarray:
    """The original model's radial filter R_t(d), shape (n, paths' weights), float64."""
    p = params["params"]
    z = edge_basis(config, params, distances)
    c = config.act_constant[config.radial_act]
    n = len(config.radial_hidden) + 1
    for i in range(n):
        w = _np(p[f"layer{layer}_radial_{i}"])
        z = z @ w / math.sqrt(w.shape[0])
        if i < n - 1:
            z = c * z / (1.0 + np.exp(-z))  # normalised SiLU
    return z


@dataclass
class FilterFit:
    coefficients: list[np.ndarray]  # per layer (num_bessel, width)
    r2: list[float]  # per layer
    r2_pooled: float
    distances: np.ndarray
    r_min: float


def r_squared(target: np.ndarray, fitted: np.ndarray) -> tuple[float, float]:
    """(residual sum of squares, total sum of squares about each column's mean)."""
    return float(((target - fitted) ** 2).sum()), float(((target - target.mean(axis=0)) ** 2).sum())


def fit_filters(config: SevenNetConfig, params, r_min: float = 1.0, num_points: int = 2000) -> FilterFit:
    """Least-squares fit of every layer's filter on a uniform grid r_min..cutoff.

    R^2 of a layer = 1 - sum of squared residuals / sum of squares about each output
    column's mean, over all grid points and columns; pooled = the same sums over layers."""
    d = np.linspace(r_min, config.cutoff, num_points)
    x = edge_basis(config, params, d)
    coeffs, r2, res_all, tot_all = [], [], 0.0, 0.0
    for t in range(config.num_layers):
        target = radial_filter(config, params, t, d)
        a, *_ = np.linalg.lstsq(x, target, rcond=None)
        res, tot = r_squared(target, x @ a)
        coeffs.append(a)
        r2.append(1.0 - res / tot)
        res_all += res
        tot_all += tot
    return FilterFit(coeffs, r2, 1.0 - res_all / tot_all, d, r_min)


def weighted_r2(config: SevenNetConfig, params, fit: FilterFit, distances: np.ndarray) -> tuple[list[float], float]:
    """R^2 of a fit evaluated at given distances (e.g. every edge of a data set)."""
    x = edge_basis(config, params, distances)
    r2, res_all, tot_all = [], 0.0, 0.0
    for t, a in enumerate(fit.coefficients):
        target = radial_filter(config, params, t, distances)
        res, tot = r_squared(target, x @ a)
        r2.append(1.0 - res / tot)
        res_all += res
        tot_all += tot
    return r2, 1.0 - res_all / tot_all


# ---------------------------------------------------------------------------
# Streamlining
# ---------------------------------------------------------------------------


def degree_table(graphs, graph_cutoff: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """k(r): average neighbour count per atom within r (facet.graph.degree_table's grid)."""
    from facet.graph import degree_table as table

    return table(graphs, graph_cutoff)


def streamline(
    config: SevenNetConfig,
    params,
    *,
    degree_radii: Sequence[float],
    degree_values: Sequence[float],
    degree_exponent: float = 0.7,
    graph_cutoff: float = 5.25,
    r_min: float = 1.0,
    num_points: int = 2000,
) -> tuple[SevenNetConfig, dict, dict]:
    """(streamlined config, params, summary) from an original SevenNet model."""
    if config.streamlined:
        raise ValueError("the model is already streamlined")
    if not graph_cutoff > config.cutoff:
        raise ValueError(f"graph_cutoff ({graph_cutoff}) must exceed the cutoff ({config.cutoff}): r_max is trainable")
    fit = fit_filters(config, params, r_min, num_points)
    p = {k: _np(v) for k, v in params["params"].items()}
    k0 = float(np.interp(config.cutoff, degree_radii, degree_values))
    new: dict[str, np.ndarray] = {}
    for name, value in p.items():
        if "_radial_" in name or name.startswith("readout_"):
            continue
        new[name] = value
    for t, a in enumerate(fit.coefficients):
        # sum / k0^p must equal sum / D_t: fold k0^p / D_t into the (linear) filter.
        new[f"layer{t}_filter"] = a * (k0**degree_exponent / config.denominators[t])
    w1, w2 = p["readout_1"], p["readout_2"]
    new["readout"] = (w1 @ w2) / math.sqrt(w1.shape[0] * w2.shape[0])
    new["r_max_raw"] = np.asarray(facet_model.r_max_raw_init(config.cutoff, graph_cutoff))
    new_config = dataclasses.replace(
        config, streamlined=True, radial_hidden=(), readout_hidden=0, graph_cutoff=float(graph_cutoff),
        degree_exponent=float(degree_exponent), degree_radii=tuple(degree_radii),
        degree_values=tuple(degree_values),
    )
    new_params = {"params": {k: np.asarray(v, np.float32) for k, v in new.items()}}
    summary = {
        "r2_per_layer": fit.r2,
        "r2_pooled": fit.r2_pooled,
        "fit_range": [r_min, config.cutoff],
        "fit_points": num_points,
        "k_at_cutoff": k0,
        "degree_exponent": degree_exponent,
        "original_denominators": list(config.denominators),
        "radial_widths": [radial_width(config, t) for t in range(config.num_layers)],
    }
    return new_config, new_params, summary


# ---------------------------------------------------------------------------
# Batched evaluation on Facet graphs
# ---------------------------------------------------------------------------


def _predict_fn(config: SevenNetConfig) -> Callable:
    module = SevenNet(config)
    cutoff = graph_cutoff(config)

    @jax.jit
    def fn(params, batch):
        return losses.predict(module, params, batch, cutoff)[:2]

    return fn


def evaluate(config: SevenNetConfig, params, loader, dtype: str = "float32") -> dict:
    """Per-structure predictions on every batch of a non-shuffled loader, and errors
    against its labels: energies per atom (eV/atom), forces (eV/A)."""
    fn = _predict_fn(config)
    cast = facet_model.cast_params(params, dtype)
    e_pred, e_ref, n_at, f_pred, f_ref = [], [], [], [], []
    with jax.enable_x64(dtype == "float64"):
        for batch in loader.epoch(0):
            b = jax.tree.map(lambda x: jnp.asarray(x, dtype) if x.dtype == np.float64 else jnp.asarray(x), batch)
            energy, forces = fn(cast, b)
            g, nm = batch.graph_mask, batch.node_mask
            e_pred.append(np.asarray(energy, np.float64)[g])
            e_ref.append(batch.energy[g])
            n_at.append(batch.n_atoms[g])
            f_pred.append(np.asarray(forces, np.float64)[nm])
            f_ref.append(batch.forces[nm])
    e_pred, e_ref, n_at = np.concatenate(e_pred), np.concatenate(e_ref), np.concatenate(n_at)
    f_pred, f_ref = np.concatenate(f_pred), np.concatenate(f_ref)
    de = (e_pred - e_ref) / n_at
    df = f_pred - f_ref
    return {
        "energy_per_atom": e_pred / n_at,
        "forces": f_pred,
        "energy_mae": float(np.abs(de).mean()),
        "energy_rmse": float(np.sqrt((de**2).mean())),
        "force_mae": float(np.abs(df).mean()),
        "force_rmse": float(np.sqrt((df**2).mean())),
    }


def prediction_change(a: dict, b: dict) -> dict:
    """Mean absolute difference between two models' predictions (eV/atom, eV/A)."""
    return {
        "energy_mad": float(np.abs(a["energy_per_atom"] - b["energy_per_atom"]).mean()),
        "force_mad": float(np.abs(a["forces"] - b["forces"]).mean()),
        "energy_max": float(np.abs(a["energy_per_atom"] - b["energy_per_atom"]).max()),
        "force_max": float(np.abs(a["forces"] - b["forces"]).max()),
    }


# ---------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    params: dict
    steps: int
    epochs: float
    train_seconds: float  # wall time of the steps, compilations excluded
    compile_seconds: float
    history: list = field(default_factory=list)  # (step, seconds, loss)


def finetune(
    config: SevenNetConfig,
    params,
    loader,
    *,
    seconds: float = 300.0,
    max_steps: int | None = None,
    learning_rate: float = 5e-4,
    energy_weight: float = 10.0,
    force_weight: float = 1.0,
    log: Callable[[str], None] | None = print,
) -> FinetuneResult:
    """Adam on loss = w_E mean((dE/atom)^2) + w_F mean(dF^2), float32, learning rate
    decaying linearly to 0 over the time budget (compilations do not count)."""
    import optax

    module = SevenNet(config)
    cutoff = graph_cutoff(config)
    params = facet_model.cast_params(params, "float32")
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    state = opt.init(params)

    weights = SimpleNamespace(loss="mse", energy_weight=energy_weight, force_weight=force_weight,
                              stress_weight=0.0)

    def loss_fn(p, batch):
        return losses.loss_from_sums(losses.error_sums(module, p, batch, cutoff), weights)

    @jax.jit
    def step(p, s, batch, lr):
        s = s._replace(hyperparams={**s.hyperparams, "learning_rate": lr})
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    seen, train_s, compile_s, steps, history = set(), 0.0, 0.0, 0, []
    n_batches = len(loader)
    epoch = 0
    done = False
    while not done:
        for batch in loader.epoch(epoch):
            shape = (batch.species.shape[0], batch.senders.shape[0])
            frac = min(train_s / seconds, 1.0) if seconds else 0.0
            if max_steps:
                frac = max(frac, steps / max_steps)
            lr = learning_rate * (1.0 - frac)
            b = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) if x.dtype == np.float64 else jnp.asarray(x), batch)
            t0 = time.perf_counter()
            params, state, loss = step(params, state, b, jnp.float32(lr))
            loss = float(loss)
            dt = time.perf_counter() - t0
            if shape in seen:
                train_s += dt
            else:
                seen.add(shape)
                compile_s += dt
            steps += 1
            history.append((steps, train_s, loss))
            if log and steps % 20 == 0:
                log(f"  step {steps}: loss {loss:.4g}, lr {lr:.2e}, {train_s:.0f} s (+{compile_s:.0f} s compiling)")
            if (seconds and train_s >= seconds) or (max_steps and steps >= max_steps):
                done = True
                break
        epoch += 1
    return FinetuneResult(params, steps, steps / n_batches, train_s, compile_s, history)


# ---------------------------------------------------------------------------
# The message-sum scaling exponent
# ---------------------------------------------------------------------------


def message_scaling(config: SevenNetConfig, params, loader, dtype: str = "float32") -> dict:
    """Per real atom: neighbour count k within the cutoff and, per layer, the RMS over the
    scalar (0e) channels ("scalar") and over all components ("total") of the raw message
    sum (before the divisor); "*_incoherent": the same RMS of sqrt(sum_e m_e^2), what the
    sum would be for messages of random signs; "*_relative": the sum divided by the RMS
    size of one message, rms_e |m_e| (so that it grows as k^1 for equal messages and
    k^0.5 for random signs)."""
    module = SevenNet(config)
    cutoff = graph_cutoff(config)
    cast = facet_model.cast_params(params, dtype)

    @jax.jit
    def run(p, batch):
        edge_graph = batch.node_graph[batch.receivers]
        vectors = (batch.positions[batch.senders] - batch.positions[batch.receivers]
                   + jnp.einsum("ei,eij->ej", batch.edge_shifts, batch.cell[edge_graph]))
        far = jnp.asarray([2.0 * cutoff, 0.0, 0.0], vectors.dtype)
        vectors = jnp.where(batch.edge_mask[:, None], vectors, far)
        _, state = module.apply(p, vectors, batch.senders, batch.receivers, batch.species,
                                mutable=["intermediates"])
        inter = state["intermediates"]
        dist = jnp.linalg.norm(vectors, axis=-1)
        k = jax.ops.segment_sum((dist < config.cutoff).astype(vectors.dtype), batch.receivers,
                                batch.species.shape[0])
        out = {"scalar": [], "total": [], "scalar_incoherent": [], "total_incoherent": []}
        for t in range(config.num_layers):
            sums, sq = inter[f"message_sum_{t}"][0], inter[f"message_sq_sum_{t}"][0]
            out["scalar"].append(jnp.sqrt(jnp.mean(sums["0e"][:, :, 0] ** 2, axis=1)))
            out["scalar_incoherent"].append(jnp.sqrt(jnp.mean(sq["0e"][:, :, 0], axis=1)))
            flat = jnp.concatenate([v.reshape(v.shape[0], -1) for v in sums.values()], axis=1)
            flat_sq = jnp.concatenate([v.reshape(v.shape[0], -1) for v in sq.values()], axis=1)
            out["total"].append(jnp.sqrt(jnp.mean(flat**2, axis=1)))
            out["total_incoherent"].append(jnp.sqrt(jnp.mean(flat_sq, axis=1)))
        return k, {key: jnp.stack(v, 1) for key, v in out.items()}

    ks, parts, struct = [], {}, []
    offset = 0
    with jax.enable_x64(dtype == "float64"):
        for batch in loader.epoch(0):
            b = jax.tree.map(lambda x: jnp.asarray(x, dtype) if x.dtype == np.float64 else jnp.asarray(x), batch)
            k, out = run(cast, b)
            m = batch.node_mask
            ks.append(np.asarray(k)[m])
            for key, v in out.items():
                parts.setdefault(key, []).append(np.asarray(v, np.float64)[m])
            struct.append(batch.node_graph[m] + offset)
            offset += int(batch.graph_mask.sum())
    result = {key: np.concatenate(v) for key, v in parts.items()}
    k = np.concatenate(ks)
    # |sum| relative to the typical message, rms_e |m_e| = sqrt(sum_e |m_e|^2 / k).
    for kind in ("scalar", "total"):
        rms = result[f"{kind}_incoherent"] / np.sqrt(np.maximum(k, 1.0))[:, None]
        result[f"{kind}_relative"] = result[kind] / np.where(rms > 0, rms, np.inf)
    result.update(k=k, structure=np.concatenate(struct))
    return result


def fit_exponent(k: np.ndarray, m: np.ndarray, min_k: float = 1.0, n_boot: int = 200, groups=None,
                 seed: int = 0) -> dict:
    """Least-squares slope of log m against log k (|m| ~ k^p) with a bootstrap interval
    (resampling whole structures when ``groups`` is given)."""
    keep = (k >= min_k) & (m > 0)
    x, y = np.log(k[keep]), np.log(m[keep])
    slope, intercept = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    boots = []
    if groups is not None:
        g = groups[keep]
        uniq, inv = np.unique(g, return_inverse=True)
        members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
        for _ in range(n_boot):
            pick = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
            boots.append(np.polyfit(x[pick], y[pick], 1)[0])
    else:
        for _ in range(n_boot):
            pick = rng.integers(0, len(x), len(x))
            boots.append(np.polyfit(x[pick], y[pick], 1)[0])
    residual = y - (slope * x + intercept)
    return {
        "p": float(slope),
        "intercept": float(intercept),
        "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "n_atoms": int(keep.sum()),
        "residual_std": float(residual.std()),
        "k_range": [float(k[keep].min()), float(k[keep].max())],
    }


def normalised_trend(k: np.ndarray, m: np.ndarray, p: float, min_k: float = 1.0) -> dict:
    """How m / k^p still depends on k: the log-log slope (0 = k-independent) and the
    ratio of its mean over the densest and the sparsest quartile of atoms."""
    keep = (k >= min_k) & (m > 0)
    x, y = np.log(k[keep]), np.log(m[keep]) - p * np.log(k[keep])
    slope = float(np.polyfit(x, y, 1)[0])
    lo, hi = np.percentile(x, [25, 75])
    ratio = float(np.exp(y[x >= hi].mean() - y[x <= lo].mean()))
    return {"p": p, "residual_slope": slope, "dense_over_sparse": ratio}
