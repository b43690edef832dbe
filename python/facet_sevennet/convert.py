"""Read a SevenNet checkpoint (``.pth``, torch pickle) into a ``SevenNetConfig`` and
numpy parameters for ``facet_sevennet.model.SevenNet``.

This is the only place that needs torch; everything else runs from the
converted ``.npz`` (``facet_sevennet.model.save``/``load``).  Only the
architecture SevenNet-0 uses is supported (NequIP interaction, 'linear'
self-connection, Bessel basis, XPLOR envelope, no biases, linear readout),
and the converter checks every one of those settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from facet.errors import CheckpointError
from facet_sevennet.model import (
    SevenNetConfig,
    clebsch_gordan,
    conv_output_irreps,
    conv_paths,
    gate_irreps,
    ir_key,
    irreps_list,
    linear_weight_shapes,
    radial_width,
)

SEVENNET0_RELATIVE = Path("pretrained_potentials") / "SevenNet_0__11Jul2024" / "checkpoint_sevennet_0.pth"



def sevennet0_checkpoint() -> Path:
    """The SevenNet-0 (11Jul2024) checkpoint shipped in the installed ``sevenn`` wheel."""
    spec = importlib.util.find_spec("sevenn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the sevenn package is not installed: give the checkpoint path explicitly "
                              "(the peer environment .venv-peers has it: bash benchmarks/peers/setup_envs.sh)")
    path = Path(list(spec.submodule_search_locations)[0]) / SEVENNET0_RELATIVE
    if not path.is_file():
        raise CheckpointError(f"{path} not found in the installed sevenn package")
    return path


def activation_constant(name: str) -> float:
    """e3nn's normalize2mom constant, <f(z)^2>^(-1/2) for z ~ N(0, 1), estimated the way
    e3nn (torch) estimates it (10^6 float64 samples of torch's generator seeded with 0),
    so that the port reproduces the checkpoint's activations exactly."""
    import torch

    fn = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}[name]
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(1_000_000, generator=generator, dtype=torch.float64)
    return float(fn(z).pow(2).mean().pow(-0.5).item())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(".")[:3])


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise CheckpointError(f"unsupported SevenNet checkpoint: {what}")


def _linear(flat: np.ndarray, in_irreps, out_irreps) -> dict[str, np.ndarray]:
    """An e3nn Linear's flat weight -> {irrep: (mul_in, mul_out)} (instructions in input order)."""
    out, start = {}, 0
    shapes = linear_weight_shapes(in_irreps, out_irreps)
    for _, l, p in in_irreps:
        k = ir_key(l, p)
        if k not in shapes:
            continue
        a, b = shapes[k]
        out[k] = flat[start: start + a * b].reshape(a, b)
        start += a * b
    if start != flat.size:
        raise CheckpointError(f"linear weight has {flat.size} entries, the irreps need {start}")
    return out


def read_checkpoint(path=None) -> tuple[SevenNetConfig, dict, dict]:
    """(config, params, info) of a SevenNet checkpoint (default: SevenNet-0 from the sevenn wheel)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            "reading a SevenNet .pth checkpoint needs torch, which this environment lacks: convert it once "
            "in the peer environment (`.venv-peers/bin/python -m facet_sevennet convert -o sevennet0.npz`) "
            "and pass the .npz (`--model sevennet0.npz`, or facet_sevennet.load)") from e

    path = Path(path) if path is not None else sevennet0_checkpoint()
    ck = torch.load(path, weights_only=False, map_location="cpu")
    cfg, sd = ck["config"], ck["model_state_dict"]
    sd = {k: v.detach().cpu().double().numpy() for k, v in sd.items()}

    _require(cfg.get("interaction_type", "nequip") == "nequip", "interaction_type must be nequip")
    _require(cfg.get("self_connection_type") == "linear", "self_connection_type must be 'linear'")
    _require(not cfg.get("use_bias_in_linear", False), "biases in linear layers")
    _require(not cfg.get("readout_as_fcn", False), "an MLP readout")
    _require(not cfg.get("use_modality", False), "multi-fidelity (modal) models")
    _require(cfg["radial_basis"]["radial_basis_name"] == "bessel", "radial basis must be bessel")
    _require(cfg["cutoff_function"]["cutoff_function_name"] == "XPLOR", "cutoff function must be XPLOR")
    _require(cfg.get("_normalize_sph", False), "unnormalised spherical harmonics")
    for key in ("act_radial",):
        _require(cfg[key] == "silu", f"{key} must be silu")
    _require(cfg["act_scalar"].get("e") == "silu" and cfg["act_gate"].get("e") == "silu",
             "even scalar and gate activations must be silu")
    irreps = cfg.get("irreps_manual")
    _require(isinstance(irreps, (list, tuple)) and len(irreps) == cfg["num_convolution_layer"] + 1,
             "irreps_manual must list the irreps of every layer")

    species = list(cfg["chemical_species"])
    from ase.data import atomic_numbers

    type_map = cfg["_type_map"]
    _require(all(type_map[atomic_numbers[s]] == i for i, s in enumerate(species)),
             "type map is not the chemical_species order")
    n_layers = cfg["num_convolution_layer"]
    denominators = tuple(float(sd[f"{t}_convolution.denominator"].reshape(-1)[0]) for t in range(n_layers))
    config = SevenNetConfig(
        elements=tuple(species),
        cutoff=float(cfg["cutoff"]),
        cutoff_on=float(cfg["cutoff_function"]["cutoff_on"]),
        num_bessel=int(cfg["radial_basis"]["bessel_basis_num"]),
        irreps=tuple(str(s) for s in irreps),
        sh_lmax=int(cfg["lmax"] if cfg.get("lmax_edge", -1) < 0 else cfg["lmax_edge"]),
        parity=bool(cfg["is_parity"]),
        radial_hidden=tuple(int(h) for h in cfg["weight_nn_hidden_neurons"]),
        denominators=denominators,
        readout_hidden=0,
        act_constants=(("silu", activation_constant("silu")),),
        graph_cutoff=float(cfg["cutoff"]),
        dtype="float32",
    )

    p: dict[str, np.ndarray] = {}
    p["bessel_frequencies"] = sd["edge_embedding.basis_function.coeffs"]
    x0 = irreps_list(config.irreps[0])
    p["embedding"] = sd["onehot_to_feature_x.linear.weight"].reshape(len(species), x0[0][0])
    old_order = _version(cfg.get("version", "0.0.0")) < (0, 11, 0)
    for t in range(n_layers):
        x_irreps = irreps_list(config.irreps[t])
        paths = conv_paths(config, t)
        mid = conv_output_irreps(paths)
        _, _, gate_in = gate_irreps(config.irreps[t + 1])
        for name, key, a, b in (
            ("self_connection", f"{t}_self_connection_intro", x_irreps, gate_in),
            ("linear_1", f"{t}_self_interaction_1", x_irreps, x_irreps),
            ("linear_2", f"{t}_self_interaction_2", mid, gate_in),
        ):
            for k, w in _linear(sd[f"{key}.linear.weight"].reshape(-1), a, b).items():
                p[f"layer{t}_{name}_{k}"] = w
        hidden = (config.num_bessel,) + config.radial_hidden + (radial_width(config, t),)
        for i in range(len(hidden) - 1):
            w = sd[f"{t}_convolution.weight_nn.layer{i}.weight"]
            _require(w.shape == (hidden[i], hidden[i + 1]), f"layer {t} radial MLP shape {w.shape}")
            p[f"layer{t}_radial_{i}"] = w
        # The last radial layer's columns: path order and the sign of the w3j the
        # checkpoint's tensor product used (some old ones have flipped signs).
        last = p[f"layer{t}_radial_{len(hidden) - 2}"].copy()
        if old_order:
            src = paths  # checkpoint columns are in creation order, like ours
        else:  # SevenNet >= 0.11 sorts paths by output irrep (stable)
            src = sorted(paths, key=lambda q: (q.ir_out[0], q.ir_out[1], q.weight_start))
        cols, start = {}, 0
        for q in src:
            cols[q] = last[:, start: start + q.mul]
            start += q.mul
        fixed = np.empty_like(last)
        for q in paths:
            block = cols[q]
            (l1, _), (l2, _), (l3, _) = q.ir_in, q.ir_sh, q.ir_out
            key = f"{t}_convolution.convolution._compiled_main_left_right._w3j_{l1}_{l2}_{l3}"
            if l1 > 0 and l2 > 0 and l3 > 0 and key in sd:
                saved, ours = sd[key], clebsch_gordan(l1, l2, l3)
                if np.allclose(saved, -ours, atol=1e-6):
                    block = -block
                elif not np.allclose(saved, ours, atol=1e-6):
                    raise CheckpointError(f"{key} is neither +/- the Clebsch-Gordan coefficients")
            fixed[:, q.weight_start: q.weight_start + q.mul] = block
        p[f"layer{t}_radial_{len(hidden) - 2}"] = fixed
    n_last = irreps_list(config.irreps[-1])[0][0]
    flat = sd["reduce_input_to_hidden.linear.weight"].reshape(-1)
    hidden_r = flat.size // n_last
    p["readout_1"] = flat.reshape(n_last, hidden_r)
    p["readout_2"] = sd["reduce_hidden_to_energy.linear.weight"].reshape(hidden_r, 1)
    config = dataclasses.replace(config, readout_hidden=hidden_r)
    p["species_shift"] = sd["rescale_atomic_energy.shift"].reshape(-1)
    p["species_scale"] = sd["rescale_atomic_energy.scale"].reshape(-1)
    _require(p["species_shift"].shape == (len(species),), "per-species shift/scale")

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    info = {
        "source": Path(path).name,
        "source_sha256": digest,
        "sevenn_checkpoint_version": str(cfg.get("version")),
        "epoch": ck.get("epoch"),
        "avg_num_neigh": [float(x) for x in np.ravel(cfg.get("avg_num_neigh", []))],
    }
    params = {"params": {k: np.asarray(v, np.float32) for k, v in p.items()}}
    bad = [k for k, v in params["params"].items() if not np.all(np.isfinite(v))]
    _require(not bad, f"non-finite parameters {bad}")
    return config, params, info
