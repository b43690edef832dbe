"""Training checkpoints without pickle: flax msgpack, written atomically.

A checkpoint is one msgpack file holding plain arrays and JSON strings:
the run config, step, parameters, EMA parameters, optimiser state and a
summary (`info`: elements, training data, best validation errors). It is
written to a temporary file, fsynced and renamed, so a run killed at any
moment (even SIGKILL) leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from facet.config import FacetConfig, TrainConfig, from_dict, to_dict
from facet.errors import CheckpointError
from facet.files import atomic_write

FORMAT = "facet-checkpoint"
VERSION = 1



# TrainConfig fields that older checkpoints may carry (the warm-up is now counted in steps).
RETIRED_TRAIN_FIELDS = ("warmup_fraction",)


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x), tree)


def save(path: str | Path, *, config: TrainConfig, step: int, params, ema_params, opt_state=None,
         info: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(to_dict(config)),
        "step": int(step),
        "params": _to_numpy(params),
        "ema_params": _to_numpy(ema_params),
        "opt_state": _to_numpy(serialization.to_state_dict(opt_state)) if opt_state is not None else {},
        "info": json.dumps(info or {}),
    }
    atomic_write(path, serialization.msgpack_serialize(payload))


def is_checkpoint(path: str | Path) -> bool:
    """Whether path holds a Facet training checkpoint (its format tag leads the msgpack map)."""
    try:
        with open(path, "rb") as f:
            return FORMAT.encode() in f.read(64)
    except OSError:
        return False


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; `config` is a TrainConfig, `info` a dict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                              "it may be truncated or not a Facet checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Facet training checkpoint")
    if int(payload.get("version", -1)) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {payload['version']}, newer than "
                              f"this facet understands ({VERSION}); upgrade facet")
    config = json.loads(payload["config"])
    for name in RETIRED_TRAIN_FIELDS:  # settings of older versions that no longer exist
        config.pop(name, None)
    payload["config"] = from_dict(TrainConfig, config)
    payload["info"] = json.loads(payload["info"])
    payload["step"] = int(payload["step"])
    return payload


def restore_opt_state(template, state_dict):
    return serialization.from_state_dict(template, state_dict)


def load_for_inference(path: str | Path) -> tuple[FacetConfig, Any, dict]:
    """(model config, EMA parameters, info) — what export and the calculator need."""
    payload = load(path)
    params = jax.tree.map(np.asarray, payload["ema_params"])
    return payload["config"].model, params, payload["info"]
