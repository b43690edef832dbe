"""One way to build every model the peer benchmarks compare, as an ASE calculator.

    from calculators import make_calculator, describe
    calc = make_calculator("sevennet-0")
    calc = make_calculator("facet", model_path="export/facet-small-si.hlo")
    info = describe("chgnet")          # parameters, weights label, package version, ...

Names (see benchmarks/peers/README.md, "Zero-shot accuracy and timing"):

| name                 | what                                           | weights           | environment |
|----------------------|------------------------------------------------|-------------------|-------------|
| `sevennet-0`         | SevenNet-0 (11Jul2024), shipped in the wheel   | shipped weights   | .venv-peers |
| `chgnet`             | CHGNet 0.3.0, shipped in the wheel             | shipped weights   | .venv-peers |
| `nequix-mp-1`        | Nequix-MP-1 (`../shared/peers/nequix-mp-1.nqx`) | shipped weights   | .venv-peers |
| `mace-mp-small-arch` | MACE-MP-0 "small" architecture                 | random weights    | .venv-mace  |
| `mace`               | a MACE `.model` file (`--model-path`)          | trained here      | .venv-mace  |
| `sevennet`           | a SevenNet checkpoint `.pth` (`--model-path`)  | trained here      | .venv-peers |
| `nequix`             | a Nequix `.nqx` file (`--model-path`)          | trained here      | .venv-peers |
| `facet`              | an exported Facet `.hlo` file (`--model-path`) | trained here      | .venv-peers or .venv |

This module imports only the standard library at import time, so that the
scripts can set thread counts (``set_thread_env``) before numpy, torch or jax
are loaded.  The peer weights are never copied into the repository: the
Nequix-MP-1 file is read from ``$FACET_PEERS_DIR`` or the sibling directory
``shared/peers`` next to the repository.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# name -> (environment, package distribution, weights label)
MODELS: dict[str, tuple[str, str, str]] = {
    "sevennet-0": ("peers", "sevenn", "shipped weights"),
    "chgnet": ("peers", "chgnet", "shipped weights"),
    "nequix-mp-1": ("peers", "nequix", "shipped weights"),
    "mace-mp-small-arch": ("mace", "mace-torch", "random weights"),
    "mace": ("mace", "mace-torch", "trained here"),
    "sevennet": ("peers", "sevenn", "trained here"),
    "nequix": ("peers", "nequix", "trained here"),
    "facet": ("facet", "facet-md", "trained here"),
}
NEEDS_PATH = {"mace", "sevennet", "nequix", "facet"}
VENV = {"peers": ".venv-peers", "mace": ".venv-mace", "facet": ".venv-peers"}

# MACE-MP-0 "small" (2023-12-10-mace-128-L0): ScaleShiftMACE, 128 channels, max_L 0
# (hidden 128x0e), r_max 6 A, 10 Bessel functions, polynomial cutoff p=5, max_ell 3,
# correlation 3, 2 RealAgnosticResidual interactions, MLP 16x0e, radial MLP 64-64-64,
# SiLU gate, the 89 MPtrj elements (Z = 1-83, 89-94).
MACE_MP_SMALL = {
    "r_max": 6.0,
    "num_bessel": 10,
    "num_polynomial_cutoff": 5,
    "max_ell": 3,
    "num_interactions": 2,
    "hidden_irreps": "128x0e",
    "MLP_irreps": "16x0e",
    "correlation": 3,
    "radial_MLP": [64, 64, 64],
    "atomic_numbers": list(range(1, 84)) + list(range(89, 95)),
    "avg_num_neighbors": 35.0,  # irrelevant for timing; a typical MPtrj value at 6 A
}


class ModelUnavailable(RuntimeError):
    """The model cannot be built in this interpreter (wrong environment, missing package or file)."""


# ----------------------------------------------------------------------------
# threads


def set_thread_env(threads: int) -> dict[str, str]:
    """Limit every runtime to ``threads`` threads; call before numpy/torch/jax are imported.

    Returns the environment variables it set (for the benchmark record).
    """
    t = str(int(threads))
    env = {
        "OMP_NUM_THREADS": t,
        "MKL_NUM_THREADS": t,
        "OPENBLAS_NUM_THREADS": t,
        "NUMEXPR_NUM_THREADS": t,
        "TF_NUM_INTRAOP_THREADS": t,
        "TF_NUM_INTEROP_THREADS": "1",
    }
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads"))]
    if int(threads) == 1:
        flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    # With more threads XLA sizes its pool from the CPUs the process may use (pin with
    # --cpus); a bare "intra_op_parallelism_threads=T" in XLA_FLAGS is a fatal parse error.
    env["XLA_FLAGS"] = " ".join(flags)
    loaded = [m for m in ("torch", "jax", "numpy") if m in sys.modules]
    if loaded:
        print(f"warning: set_thread_env after {', '.join(loaded)} was imported; "
              "their thread pools may already be sized", file=sys.stderr)
    os.environ.update(env)
    return env


def set_torch_threads(threads: int) -> None:
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work has started
            pass


# ----------------------------------------------------------------------------
# helpers


def peers_dir() -> Path:
    """Directory with peer weight files: $FACET_PEERS_DIR, else ../shared/peers next to the repo."""
    env = os.environ.get("FACET_PEERS_DIR")
    return Path(env).expanduser() if env else REPO.parent / "shared" / "peers"


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _this_venv() -> str:
    return Path(sys.prefix).name


def _import(module: str, name: str):
    """Import ``module`` for model ``name``, or raise ModelUnavailable saying what to run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        env = MODELS[name][0]
        want = VENV[env]
        here = _this_venv()
        if env == "facet":
            hint = "run with .venv-peers/bin/python (or the project's .venv/bin/python)"
        elif here != want:
            hint = f"run with {want}/bin/python (this is {here})"
        else:
            hint = "run bash benchmarks/peers/setup_envs.sh"
        raise ModelUnavailable(f"model {name!r} needs the Python package {module!r} ({exc}); {hint}") from exc


def _resolve_path(name: str, model_path) -> Path:
    if name == "nequix-mp-1" and model_path is None:
        p = peers_dir() / "nequix-mp-1.nqx"
        if not p.exists():
            raise ModelUnavailable(
                f"Nequix-MP-1 weights not found at {p}; set FACET_PEERS_DIR to the directory "
                "holding nequix-mp-1.nqx (they are not part of the repository or the wheel)")
        return p
    if model_path is None:
        raise ModelUnavailable(f"model {name!r} needs --model-path (a file trained or exported here)")
    p = Path(model_path).expanduser()
    if not p.exists():
        raise ModelUnavailable(f"model file {p} does not exist")
    return p


def _torch_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _eqx_params(model) -> int:
    import equinox as eqx
    import jax

    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))


# ----------------------------------------------------------------------------
# builders: each returns (calculator, info)


def _build_sevennet(name, path, dtype, threads):
    _import("sevenn", name)
    from sevenn.calculator import SevenNetCalculator

    set_torch_threads(threads)
    if dtype not in (None, "float32"):
        raise ValueError("SevenNet runs in float32 only here")
    model = "7net-0" if path is None else str(path)
    calc = SevenNetCalculator(model=model, device="cpu")
    numbers = {int(z) for z in calc.type_map}
    info = {"parameters": _torch_params(calc.model), "dtype": "float32", "cutoff": float(calc.cutoff),
            "variant": "SevenNet-0 (11Jul2024)" if path is None else "SevenNet checkpoint"}
    return calc, numbers, info


def _build_chgnet(name, path, dtype, threads):
    _import("chgnet", name)
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    set_torch_threads(threads)
    if dtype not in (None, "float32"):
        raise ValueError("CHGNet runs in float32 only here")
    model = CHGNet.load(model_name="0.3.0", verbose=False, use_device="cpu")
    calc = CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="ignore")
    info = {"parameters": int(model.n_params), "dtype": "float32",
            "cutoff": float(model.graph_converter.atom_graph_cutoff),
            "variant": f"CHGNet {model.version}"}
    return calc, set(range(1, 95)), info


def _build_nequix(name, path, dtype, threads):
    _import("nequix", name)
    _import("equinox", name)
    from nequix.calculator import NequixCalculator

    if dtype not in (None, "float32"):
        raise ValueError("Nequix runs in float32 only here")
    path = _resolve_path(name, path)
    calc = NequixCalculator(model_path=str(path), use_kernel=False)
    numbers = {int(z) for z in calc.config["atomic_numbers"]}
    info = {"parameters": _eqx_params(calc.model), "dtype": "float32", "cutoff": float(calc.cutoff),
            "variant": "Nequix-MP-1" if name == "nequix-mp-1" else "Nequix .nqx", "file": path.name}
    return calc, numbers, info


def _build_mace(name, path, dtype, threads):
    _import("mace", name)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch
    from mace.calculators import MACECalculator

    set_torch_threads(threads)
    if name == "mace-mp-small-arch":
        dtype = dtype or "float32"  # mace_mp()'s default
        from e3nn import o3
        from mace import modules

        cfg = MACE_MP_SMALL
        torch.manual_seed(0)
        saved = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
        try:
            z = cfg["atomic_numbers"]
            import numpy as np

            model = modules.ScaleShiftMACE(
                r_max=cfg["r_max"], num_bessel=cfg["num_bessel"],
                num_polynomial_cutoff=cfg["num_polynomial_cutoff"], max_ell=cfg["max_ell"],
                interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                num_interactions=cfg["num_interactions"], num_elements=len(z),
                hidden_irreps=o3.Irreps(cfg["hidden_irreps"]), MLP_irreps=o3.Irreps(cfg["MLP_irreps"]),
                atomic_energies=np.zeros(len(z)), avg_num_neighbors=cfg["avg_num_neighbors"],
                atomic_numbers=z, correlation=cfg["correlation"], gate=torch.nn.functional.silu,
                radial_MLP=cfg["radial_MLP"], radial_type="bessel",
                # MACE-MP-0 predates the reduced Clebsch-Gordan basis: keep the original
                # (larger) symmetric contractions
                use_reduced_cg=False,
                atomic_inter_scale=1.0, atomic_inter_shift=0.0,
            )
        finally:
            torch.set_default_dtype(saved)
        model.eval()
        calc = MACECalculator(models=model, device="cpu", default_dtype=dtype)
        variant = "MACE-MP-0 small architecture (128x0e, L=0, r_max 6, correlation 3, 2 layers)"
        file = None
    else:
        path = _resolve_path(name, path)
        # default: the dtype the model was saved in
        calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype=dtype or "")
        dtype = calc.default_dtype
        variant = "MACE .model"
        file = path.name
    numbers = {int(z) for z in calc.models[0].atomic_numbers}
    info = {"parameters": _torch_params(calc.models[0]), "dtype": dtype, "cutoff": float(calc.r_max),
            "variant": variant}
    if file:
        info["file"] = file
    return calc, numbers, info


def _build_facet(name, path, dtype, threads):
    _import("facet.calculator", name)
    from ase.data import atomic_numbers

    from facet.calculator import FacetCalculator

    path = _resolve_path(name, path)
    calc = FacetCalculator(str(path))
    header = calc.runner.header
    if dtype not in (None, calc.runner.dtype):
        raise ValueError(f"{path.name} is a {calc.runner.dtype} model; re-export it for {dtype}")
    numbers = {atomic_numbers[s] for s in calc.elements}
    info = {"parameters": int(header.get("parameter_count") or 0) or None, "dtype": calc.runner.dtype,
            "cutoff": float(calc.cutoff), "variant": f"Facet ({', '.join(calc.elements)})", "file": path.name,
            "elements": list(calc.elements)}
    return calc, numbers, info


BUILDERS = {
    "sevennet-0": _build_sevennet, "sevennet": _build_sevennet,
    "chgnet": _build_chgnet,
    "nequix-mp-1": _build_nequix, "nequix": _build_nequix,
    "mace-mp-small-arch": _build_mace, "mace": _build_mace,
    "facet": _build_facet,
}


# ----------------------------------------------------------------------------
# public API


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")


def make_calculator(name: str, model_path=None, dtype: str | None = None, threads: int | None = None):
    """An ASE calculator for model ``name`` (see the module docstring).

    The calculator gets an attribute ``bench_info`` (the ``describe`` dict) and
    ``bench_numbers`` (the set of atomic numbers the model knows).
    Raises ModelUnavailable when this interpreter cannot build it.
    """
    _check_name(name)
    if name in NEEDS_PATH and model_path is None:
        raise ModelUnavailable(f"model {name!r} needs --model-path (a file trained or exported here)")
    if name not in NEEDS_PATH and name != "nequix-mp-1" and model_path is not None:
        raise ValueError(f"model {name!r} has fixed weights; --model-path is for "
                         f"{', '.join(sorted(NEEDS_PATH))}")
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
    calc, numbers, info = BUILDERS[name](name, model_path, dtype, threads or 1)
    env, dist, weights = MODELS[name]
    record = {"name": name, "weights": weights, "package": dist, "package_version": package_version(dist)}
    record.update(info)
    if name == "mace-mp-small-arch":
        record["note"] = "random weights: timing only, energies meaningless"
    calc.bench_info = record
    calc.bench_numbers = numbers
    return calc


def describe(name: str, model_path=None, calc=None) -> dict[str, Any]:
    """Parameter count, weights label, package version, dtype, cutoff of model ``name``.

    Builds the model unless ``calc`` (from ``make_calculator``) is given.
    """
    _check_name(name)
    if calc is None:
        calc = make_calculator(name, model_path)
    return dict(calc.bench_info)


def unsupported_elements(calc, atoms) -> list[str]:
    """Symbols in ``atoms`` that the model behind ``calc`` does not know."""
    from ase.data import chemical_symbols

    known = getattr(calc, "bench_numbers", None)
    if known is None:
        return []
    return sorted({chemical_symbols[int(z)] for z in atoms.numbers if int(z) not in known})


def versions() -> dict[str, str | None]:
    """Versions of the packages the benchmarks may use (None: not installed here)."""
    out = {"python": sys.version.split()[0], "venv": _this_venv()}
    for dist in ("numpy", "ase", "torch", "jax", "jaxlib", "e3nn", "e3nn-jax", "equinox",
                 "sevenn", "chgnet", "nequix", "mace-torch", "facet-md"):
        v = package_version(dist)
        if v is not None:
            out[dist] = v
    return out


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Describe a benchmark model (builds it).")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--model-path")
    args = ap.parse_args()
    set_thread_env(1)
    for n in args.names:
        try:
            print(json.dumps(describe(n, args.model_path), indent=1))
        except (ModelUnavailable, ValueError) as exc:
            print(f"{n}: unavailable: {exc}", file=sys.stderr)
