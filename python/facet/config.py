"""Typed configuration: the model (`FacetConfig`) nested in the run (`TrainConfig`).

Both are plain dataclasses so that a config file (JSON) and `--set key=value`
overrides on the command line map onto them field by field, with types checked.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facet.errors import ConfigError


@dataclass(frozen=True)
class FacetConfig:
    """Architecture of one Facet model. Defaults are Facet-Small (paper size).

    Frozen (hashable), so a model built from it can be a static jit argument;
    derive variants with dataclasses.replace."""

    # Element symbols in model order; species index i means elements[i].
    elements: tuple[str, ...] = ()
    # Upper bound of the trainable r_max and the cutoff of the training graph (Å).
    graph_cutoff: float = 6.0
    r_max_init: float = 5.0
    # Features of the equivariant message-passing layers (all but the last).
    hidden_irreps: str = "128x0e+64x1o+32x2e"
    num_equivariant_layers: int = 2
    # The last layer is scalar-only, followed by a plain MLP.
    scalar_channels: int = 128
    scalar_mlp_hidden: int = 64
    embedding_channels: int = 128
    sh_lmax: int = 2
    num_bessel: int = 8
    envelope_exponent: int = 6
    # Messages are divided by k(r_max)**degree_exponent (paper: 0.7).
    degree_exponent: float = 0.7
    # Average neighbour count k(r) tabulated on the training set (set by training).
    degree_radii: tuple[float, ...] = ()
    degree_values: tuple[float, ...] = ()
    # S2-MLP-Mixer: channels per l, heads, grid and MLP width.
    mixer_channels: int = 64
    mixer_heads: int = 2
    mixer_hidden: int = 16
    # 14 x 13 points: the mixer's equivariance error is 0.44 % (the test bounds it at
    # 1 %) against 0.14 % on the paper's 18 x 17, for 40 % fewer points (the mixers'
    # MLPs run per point); benchmarks/s2_grid.py measures the grids.
    s2_res_beta: int = 14
    s2_res_alpha: int = 13
    # Quadrature of the spherical grid (e3nn-jax): "soft" or "gausslegendre".
    s2_quadrature: str = "soft"
    layer_norm_eps: float = 1e-6
    # For l>0 the norm is sqrt(mean(v^2) + vector_norm_eps). In a symmetric
    # crystal those features vanish; a tiny eps would turn them into unit
    # vectors of an arbitrary direction, a steep, MD-hostile function of the
    # positions. 0.1 keeps the map nearly linear there and ~5 % off a pure
    # RMS normalisation for unit-size features.
    vector_norm_eps: float = 0.1
    # Initial value of every block's layer scale. At 0 each block starts as the
    # identity and its parameters get exactly zero gradient at the first step.
    layer_scale_init: float = 0.0
    dtype: str = "float32"

    @property
    def num_layers(self) -> int:
        """Message-passing layers (equivariant ones plus the scalar one)."""
        return self.num_equivariant_layers + 1


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data path."""

    model: FacetConfig = field(default_factory=FacetConfig)
    seed: int = 0
    batch_size: int = 8
    max_steps: int = 100_000
    max_time_minutes: float = 0.0  # 0 = no time limit
    # Loss weights: energy per atom (eV/atom), forces (eV/Å), stress (eV/Å^3).
    energy_weight: float = 1.0
    force_weight: float = 10.0
    stress_weight: float = 100.0
    # "mse" (squared errors), "mae" (absolute errors, the paper's objective; robust
    # to the heavy force tails of high-energy structures), "l2mae" (as "mae", but
    # each atom's force error is the norm of its force-error vector) or "huber"
    # (squared below huber_delta, absolute above; per component).
    loss: str = "mse"
    huber_delta: float = 0.01
    # Final stage: for the last final_stage_fraction of the run (by steps or time),
    # the energy weight is final_stage_energy_weight (MACE's second stage; it pulls
    # in the energies of the few low-energy structures). 0 = no final stage.
    final_stage_fraction: float = 0.0
    final_stage_energy_weight: float = 10.0
    # At the end of a run, refit the species shifts (exactly, by least squares of the
    # training energies' residuals on composition): training leaves a per-atom energy
    # offset that the small energy weight removes only slowly. Forces do not change.
    refit_species_shift: bool = True
    # "prodigy" (optax.contrib, sets its own step size), "adam" (AdamW) or "muon"
    # (optax.contrib.muon: Muon for matrices, Adam for the rest). learning_rate is
    # Adam's and Muon's step size and multiplies Prodigy's own estimate (keep 1.0).
    optimizer: str = "muon"
    learning_rate: float = 0.01
    # Prodigy's initial step-size estimate: 1e-3 starts learning within ~30 steps
    # on the bundled data, the optax default 1e-6 only after ~80.
    prodigy_d0: float = 1e-3
    # Schedule: a linear warm-up counted in optimiser steps (not wall time, which
    # includes compilation) from warmup_start x the step size, then a decay to zero
    # ("linear" or "cosine") over the run's progress (steps or wall time, whichever
    # is further along).
    warmup_steps: int = 100
    warmup_start: float = 0.2
    decay: str = "cosine"
    # r_max, the Bessel frequencies and the readout's species shift/scale and
    # global scale are fitted statistics, not features: they get this fraction of
    # the step size (0 freezes them), with Adam under Muon and AdamW, with Prodigy
    # under Prodigy. 1 treats them like the rest.
    statistics_learning_rate_factor: float = 1.0
    # False keeps r_max at r_max_init, and the training graph is then cut at
    # r_max_init instead of graph_cutoff (edges beyond r_max contribute exactly
    # zero, so this is exact and saves their cost).
    train_r_max: bool = False
    weight_decay: float = 1e-3
    prodigy_eps: float = 1e-4
    grad_clip_norm: float = 10.0
    ema_decay: float = 0.99
    ema_every: int = 32
    # Data.
    split_ratios: tuple[float, float, float] = (10.0, 1.0, 1.0)
    max_energy_per_atom: float | None = None  # outlier filter thresholds
    max_abs_force: float | None = 50.0
    # Book-keeping.
    eval_every: int = 200
    # When > 0, validate every this many minutes of wall time instead of every eval_every steps.
    eval_every_minutes: float = 0.0
    checkpoint_every_minutes: float = 2.0
    log_every: int = 20
    # Padding: "budget" packs each batch greedily up to fixed atom and edge
    # budgets of batch_budget x the mean batch (one shape, so one compilation, and
    # batches of varying graph count averaging batch_size); "menu" pads batches of
    # exactly batch_size graphs to at most max_batch_shapes shapes.
    batching: str = "budget"
    batch_budget: float = 1.1
    max_batch_shapes: int = 2
    num_devices: int = 0  # 0 = all local devices

    def __post_init__(self):
        choices = {"loss": ("mse", "mae", "l2mae", "huber"), "optimizer": ("prodigy", "adam", "muon"),
                   "decay": ("linear", "cosine"), "batching": ("budget", "menu")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        if self.batch_budget < 1.0:
            raise ConfigError(f"batch_budget must be >= 1 (a multiple of the mean batch), got {self.batch_budget}")

    @property
    def training_graph_cutoff(self) -> float:
        """Cutoff of the training graph: graph_cutoff, or r_max_init when r_max is fixed."""
        return self.model.graph_cutoff if self.train_r_max else min(self.model.r_max_init, self.model.graph_cutoff)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict) -> Any:
    """Build a dataclass from a dict, converting lists to tuples and nesting."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{name} may not be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name)
    if origin is tuple:
        seq = list(value)
        if len(args) == 2 and args[1] is Ellipsis or not args:  # tuple[T, ...] or bare tuple
            return tuple(_coerce(args[0] if args else Any, v, name) for v in seq)
        if len(seq) != len(args):
            raise ConfigError(f"{name} must have {len(args)} items, got {len(seq)}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, seq))
    if hint is float:
        return float(value)
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value}")
        return int(value)
    if hint is bool:
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if hint is str:
        return str(value)
    return value


def apply_override(config: TrainConfig, assignment: str) -> TrainConfig:
    """Apply one `key=value` (dotted keys for nested fields, JSON or bare values)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    data = to_dict(config)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"--set {key}: no config section {part!r}")
        node = node[part]
    if parts[-1] not in node:
        # Convenience: model fields may be given without the "model." prefix.
        if len(parts) == 1 and parts[0] in data["model"]:
            node = data["model"]
        else:
            raise ConfigError(f"--set {key}: unknown config field; see `python -m facet.train --print-config`")
    node[parts[-1]] = value
    return from_dict(TrainConfig, data)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    config = TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
        merged = to_dict(config)
        model = {**merged["model"], **data.pop("model", {})}
        merged.update(data)
        merged["model"] = model
        config = from_dict(TrainConfig, merged)
    for assignment in overrides:
        config = apply_override(config, assignment)
    return config
