"""Python side of the LAMMPS pair style ``facet``.

The plugin (``cpp/``, built as ``facetplugin.so``) embeds Python and talks
only to this module:

* ``load(spec)`` is called once per ``pair_style facet SPEC`` command and
  returns a :class:`ModelHandle`;
* ``ModelHandle.compute(edge_vectors, senders, receivers, species,
  energy_mask)`` is called once per force evaluation with the graph the
  plugin built from the LAMMPS neighbour list (conventions and output
  contract: ``export/README.md``) and returns ``(atom_energies, dE_dedge)``
  as float64 arrays;
* ``describe_exception(exc)`` turns a Python exception into the one-line
  message shown by LAMMPS as an ERROR.

``SPEC`` is normally the path of a Facet model file, loaded with
``facet.runtime.ModelRunner``.  For tests, custom runtimes and debugging it
may instead name a Python factory::

    pair_style facet python:MODULE:CALLABLE          # runner = CALLABLE()
    pair_style facet python:MODULE:CALLABLE:ARG      # runner = CALLABLE("ARG")

``MODULE`` must be importable by the Python that LAMMPS uses (set
``PYTHONPATH`` if needed) and the returned object must follow the runner
interface of ``facet.runtime.ModelRunner``: attributes ``elements`` (list of
element symbols, in the model's species order), ``cutoff`` (Å),
``num_layers`` (message-passing layers, sets how deep the ghost shell must
be on several MPI ranks) and ``dtype`` (``"float32"`` or ``"float64"``), and
``__call__(edge_vectors, senders, receivers, species, energy_mask) ->
(atom_energies, dE_dedge)``.  Padding to fixed shapes is the runner's job.

The input arrays handed to ``compute`` are read-only views of the plugin's
buffers, valid only during the call: a runner must not keep them.

Runners loaded from files are cached per process (keyed by the file's real
path, size and modification time), so re-issuing ``pair_style`` or creating
a new LAMMPS instance in the same Python process reuses the compiled shapes.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from facet.errors import BridgeError, FacetError

__all__ = ["ModelHandle", "load", "make_runner", "describe_exception", "PYTHON_SPEC_PREFIX"]

PYTHON_SPEC_PREFIX = "python:"
_DTYPES = ("float32", "float64")
_CACHE_SIZE = 4
_cache: "OrderedDict[tuple, Any]" = OrderedDict()



def _load_factory(spec: str):
    body = spec[len(PYTHON_SPEC_PREFIX):]
    parts = body.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BridgeError(
            f"malformed runner factory {spec!r}: expected python:MODULE:CALLABLE[:ARG]"
        )
    module_name, attr = parts[0], parts[1]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BridgeError(
            f"cannot import module {module_name!r} for {spec!r} ({exc}); "
            "is it on PYTHONPATH?"
        ) from exc
    factory = module
    for name in attr.split("."):
        try:
            factory = getattr(factory, name)
        except AttributeError as exc:
            raise BridgeError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(factory):
        raise BridgeError(f"{module_name}:{attr} is not callable")
    return factory(parts[2]) if len(parts) == 3 else factory()


def make_runner(spec: str):
    """Construct the runner named by ``spec`` (a model file, or a factory)."""
    if spec.startswith(PYTHON_SPEC_PREFIX):
        return _load_factory(spec)
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise BridgeError(f"model file not found: {spec} (working directory {os.getcwd()})")
    if os.path.isdir(path):
        raise BridgeError(f"model path is a directory, not a Facet model file: {spec}")
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    try:
        from facet.runtime import ModelRunner
    except ImportError as exc:
        raise BridgeError(f"facet.runtime is not available in this Python ({exc})") from exc
    runner = ModelRunner(path)
    _cache[key] = runner
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return runner


class ModelHandle:
    """A runner checked against the interface the plugin relies on."""

    def __init__(self, runner: Any, spec: str):
        self.runner = runner
        self.spec = spec
        try:
            elements = list(runner.elements)
            cutoff = float(runner.cutoff)
            num_layers = int(runner.num_layers)
            dtype = str(runner.dtype)
        except AttributeError as exc:
            raise BridgeError(
                f"{type(runner).__name__} does not follow the runner interface ({exc})"
            ) from exc
        if not elements or not all(isinstance(e, str) and e for e in elements):
            raise BridgeError(f"model elements must be a non-empty list of symbols: {elements!r}")
        if len(set(elements)) != len(elements):
            raise BridgeError(f"model elements contain duplicates: {elements!r}")
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise BridgeError(f"model cutoff must be positive, got {cutoff!r}")
        if num_layers < 1:
            raise BridgeError(f"model num_layers must be >= 1, got {num_layers!r}")
        if dtype not in _DTYPES:
            raise BridgeError(f"model dtype must be one of {_DTYPES}, got {dtype!r}")
        if not callable(runner):
            raise BridgeError(f"{type(runner).__name__} is not callable")
        self.elements = elements
        self.cutoff = cutoff
        self.num_layers = num_layers
        self.dtype = dtype
        self.description = str(getattr(runner, "description", None) or repr(runner))
        # The per-layer programs (facet.stages) for the multi-rank feature exchange: optional.
        self.feature_size = int(getattr(runner, "feature_size", 0) or 0) if hasattr(runner, "run_stage") else 0

    def stage_inputs(self, name):
        """The node inputs of stage program ``name``, after the graph (facet.stages)."""
        return list(self.runner.stage_inputs(name))

    def run_stage(self, name, *args):
        return tuple(np.ascontiguousarray(a, dtype=np.float64) for a in self.runner.run_stage(name, *args))

    def compute(self, edge_vectors, senders, receivers, species, energy_mask):
        atom_energies, de_dedge = self.runner(
            edge_vectors, senders, receivers, species, energy_mask
        )
        return (
            np.ascontiguousarray(atom_energies, dtype=np.float64),
            np.ascontiguousarray(de_dedge, dtype=np.float64),
        )


def load(spec: str) -> ModelHandle:
    """Called by the plugin for ``pair_style facet SPEC``."""
    return ModelHandle(make_runner(spec), spec)


def describe_exception(exc: BaseException) -> str:
    """One-line message for a LAMMPS ERROR."""
    if isinstance(exc, FacetError):  # written for users: it names the problem and the fix
        return str(exc)
    name = type(exc).__name__
    text = str(exc).strip()
    return f"{name}: {text}" if text else name
