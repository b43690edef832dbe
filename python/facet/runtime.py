"""Run an exported Facet model from numpy: padding to shape buckets (the ladder of
``facet.buckets``), dtype casting, one compilation per bucket (cached on disk by
``facet.compilation_cache``), and the force/virial assembly of ``export/README.md``.

This module is what every Python-side runtime uses (the ASE calculator and
the LAMMPS pair style's embedded interpreter), so it imports only numpy at
module level; jax is imported when a ModelRunner is created.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from facet.buckets import DEFAULT_BUCKETS, next_rung, padded_sizes
from facet.compilation_cache import cache_scope, compilation_cache_dir
from facet.modelfile import load_model_file

# ----------------------------------------------------------------------------
# the runner


class ModelRunner:
    """Evaluate a Facet model on numpy arrays.

    ``ModelRunner(path)`` loads and checks a model file;
    ``ModelRunner((header, program))`` takes an already loaded header and either
    a ``jax.export.Exported`` or a jax-traceable function with the same
    contract (used for in-process checkpoints).

    Call it as::

        atom_energies, dE_dedge = runner(edge_vectors, senders, receivers, species, energy_mask)

    with numpy inputs (edge vectors in float64) and float64 numpy outputs of
    shapes (N,) and (E, 3).  Inputs are padded to the shape buckets of the
    file's policy and cast to the model dtype at the last moment; each new
    bucket compiles once (``num_compilations``, ``shapes_seen``).
    """

    def __init__(
        self,
        source,
        *,
        buckets: dict[str, Any] | None = None,
        compilation_cache: bool = True,
        validate: bool = True,
    ):
        import jax

        if isinstance(source, (str, os.PathLike)):
            header, program = load_model_file(source)
            self.path: str | None = str(source)
        else:
            header, program = source
            self.path = None
        self.header: dict[str, Any] = header
        self.elements: tuple[str, ...] = tuple(header["elements"])
        self.cutoff: float = float(header["cutoff"])
        self.num_layers: int = int(header["num_layers"])
        self.dtype: str = str(header["dtype"])
        # A committee file (facet.committee) also returns the members' spread; the last call's
        # is in last_uncertainty (atom_energy_std, member_forces, member_energies).
        self.committee: int = int((header.get("committee") or {}).get("members") or 0)
        self.last_uncertainty: dict[str, np.ndarray] | None = None
        self._np_dtype = np.dtype(self.dtype)
        self._x64 = self.dtype == "float64"
        policy = dict(DEFAULT_BUCKETS)
        policy.update((header.get("shape_policy") or {}).get("buckets") or {})
        if buckets:
            policy.update(buckets)
        self.buckets: dict[str, Any] = policy
        graph_cutoff = float(header.get("graph_cutoff", self.cutoff))
        pad_len = float(
            (header.get("padding") or {}).get("edge_length", 2.0 * max(self.cutoff, graph_cutoff) + 1.0)
        )
        self._pad_vector = np.array([pad_len, 0.0, 0.0])
        self.validate = validate

        fn: Callable = program.call if hasattr(program, "call") else program
        if not callable(fn):
            raise TypeError("ModelRunner: expected a path, or (header, Exported | callable)")
        self._jitted = jax.jit(fn)
        self._executables: dict[tuple[int, int], Any] = {}
        self.num_compilations = 0
        self.compile_seconds = 0.0
        self.num_calls = 0
        self.last_shape: tuple[int, int] | None = None
        self.cache_dir = compilation_cache_dir() if compilation_cache else None
        # The per-layer programs (facet.stages) of a file that has them, loaded on first use.
        stages = header.get("stages") or {}
        if stages.get("symbols") != "O, G, E":  # only facet.stages' owned/ghost layout
            stages = {}
        self.feature_size: int = int(stages.get("feature_size") or 0) if self.path else 0
        self._stage_io = {p["name"]: (p["inputs"][5:], p["outputs"]) for p in stages.get("programs") or []}
        self._stage_programs: dict[str, Any] | None = None
        self._stage_executables: dict[tuple[str, int, int], Any] = {}

    # -- introspection ------------------------------------------------------

    @property
    def shapes_seen(self) -> list[tuple[int, int]]:
        """The (padded atoms, padded edges) shapes compiled so far."""
        return list(self._executables)

    def bucket_for(self, n_atoms: int, n_edges: int) -> tuple[int, int]:
        """The (padded atoms, padded edges) bucket a system of this size runs in.

        Its ladder bucket if already compiled; otherwise the smallest compiled
        bucket that fits and is at most one rung larger in each dimension;
        otherwise its ladder bucket, which is then compiled.  A neighbour
        count wandering across a rung thus compiles at most the two buckets
        around it, and only the larger one if it started above the rung.
        """
        n_pad, e_pad = padded_sizes(n_atoms, n_edges, **self.buckets)
        compiled = set(self._executables)
        if (n_pad, e_pad) in compiled or not compiled:
            return n_pad, e_pad
        s = self.buckets["steps_per_octave"]
        n_max, e_max = next_rung(n_pad - 1, s) + 1, next_rung(e_pad, s)
        fits = [
            (n * 16 + e, n, e)  # rough cost: an atom costs about as much as a dozen edges
            for n, e in compiled
            if n_atoms + 1 <= n <= n_max and n_edges <= e <= e_max
        ]
        if fits:
            _, n, e = min(fits)
            return n, e
        return n_pad, e_pad

    def __repr__(self) -> str:
        src = self.path or "<in-memory>"
        return (
            f"ModelRunner({src!r}, elements={list(self.elements)}, cutoff={self.cutoff:.4g}, "
            f"dtype={self.dtype}, compilations={self.num_compilations})"
        )

    # -- compilation --------------------------------------------------------

    def _executable(self, n_pad: int, e_pad: int):
        key = (n_pad, e_pad)
        exe = self._executables.get(key)
        if exe is None:
            import jax

            dt = self._np_dtype
            specs = (
                jax.ShapeDtypeStruct((e_pad, 3), dt),
                jax.ShapeDtypeStruct((e_pad,), np.int32),
                jax.ShapeDtypeStruct((e_pad,), np.int32),
                jax.ShapeDtypeStruct((n_pad,), np.int32),
                jax.ShapeDtypeStruct((n_pad,), dt),
            )
            t0 = time.perf_counter()
            with cache_scope(self.cache_dir), jax.enable_x64(self._x64):
                exe = self._jitted.lower(*specs).compile()
            self.compile_seconds += time.perf_counter() - t0
            self.num_compilations += 1
            self._executables[key] = exe
        return exe

    def precompile(self, n_atoms: int, n_edges: int) -> tuple[int, int]:
        """Compile the bucket for a system of this size now; returns the bucket."""
        n_pad, e_pad = self.bucket_for(n_atoms, n_edges)
        self._executable(n_pad, e_pad)
        return n_pad, e_pad

    # -- the per-layer programs (several MPI ranks exchange features between them) --
    def _padded_edges(self, edge_vectors, senders, receivers, e_pad: int, pad_node: int):
        """Edge arrays padded to e_pad: padding edges longer than the cutoff, on node pad_node."""
        n_edges = len(edge_vectors)
        ev = np.empty((e_pad, 3), dtype=self._np_dtype)
        ev[:n_edges] = edge_vectors
        ev[n_edges:] = self._pad_vector
        snd = np.full(e_pad, pad_node, dtype=np.int32)
        snd[:n_edges] = senders
        rcv = np.full(e_pad, pad_node, dtype=np.int32)
        rcv[:n_edges] = receivers
        return ev, snd, rcv

    def stage_inputs(self, name: str) -> list[str]:
        """The node inputs of stage program ``name``, after the graph inputs (facet.stages)."""
        return list(self._stage_io[name][0])

    def run_stage(self, name: str, edge_vectors, senders, receivers, species, num_owned: int, *node_inputs):
        """Stage program ``name`` of facet.stages on one graph whose first ``num_owned`` nodes
        are owned (every receiver among them) and the rest ghosts. node_inputs follow the graph
        in the program's order: features for all nodes (N, F), cotangent (num_owned, F),
        energy_mask (num_owned,). Returns its outputs as float64 arrays, unpadded: features and
        atom_energies for the owned nodes, cotangent for all, dE_dedge (E, 3)."""
        import jax

        from facet.buckets import stage_padded_sizes
        from facet.stages import rows

        if name not in self._stage_io:
            raise ValueError(f"{self.path}: no stage program {name!r} (the file has {sorted(self._stage_io)}); "
                             "re-export the model without --no-stages")
        if self._stage_programs is None:
            from facet.modelfile import load_stage_programs
            self._stage_programs = load_stage_programs(self.path)
        inputs, outputs = self._stage_io[name]
        if len(node_inputs) != len(inputs):
            raise ValueError(f"stage program {name!r} takes node inputs {inputs}, got {len(node_inputs)} arrays")
        edge_vectors = np.asarray(edge_vectors, dtype=np.float64)
        n_atoms, n_edges, n_owned = len(species), len(edge_vectors), int(num_owned)
        n_ghosts = n_atoms - n_owned
        o_pad, g_pad, e_pad = stage_padded_sizes(n_owned, n_ghosts, n_edges, **self.buckets)
        node = np.arange(n_atoms)
        node[n_owned:] += o_pad - n_owned  # ghosts after the padded owned block
        dt = self._np_dtype
        # padding edges on the first padding owned row
        ev, snd, rcv = self._padded_edges(edge_vectors, node[np.asarray(senders)], receivers, e_pad, n_owned)
        z = np.asarray(species)
        zo = np.zeros(o_pad, np.int32)
        zo[:n_owned] = z[:n_owned]
        zg = np.zeros(g_pad, np.int32)
        zg[:n_ghosts] = z[n_owned:]
        args = [ev, snd, rcv, zo, zg]
        for what, value in zip(inputs, node_inputs):
            value = np.asarray(value, dtype=np.float64)
            if rows(what, "inputs") == "all":
                padded = np.zeros((o_pad + g_pad,) + value.shape[1:], dtype=dt)
                padded[node] = value
            else:
                padded = np.zeros((o_pad,) + value.shape[1:], dtype=dt)
                padded[:n_owned] = value[:n_owned]
            args.append(padded)
        key = (name, o_pad, g_pad, e_pad)
        exe = self._stage_executables.get(key)
        with jax.enable_x64(self._x64):
            if exe is None:
                t0 = time.perf_counter()
                specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
                with cache_scope(self.cache_dir):
                    exe = jax.jit(self._stage_programs[name].call).lower(*specs).compile()
                self.compile_seconds += time.perf_counter() - t0
                self.num_compilations += 1
                self._stage_executables[key] = exe
            result = exe(*args)
            result = (result,) if len(outputs) == 1 else result
        out = []
        for what, r in zip(outputs, result):
            r = np.asarray(r).astype(np.float64)
            out.append(r[:n_edges] if what == "dE_dedge" else r[node] if rows(what, "outputs") == "all"
                       else r[:n_owned])
        return tuple(out)

    # -- evaluation ---------------------------------------------------------

    def _check(self, edge_vectors, senders, receivers, species, energy_mask):
        E = edge_vectors.shape[0]
        N = species.shape[0]
        if edge_vectors.shape != (E, 3):
            raise ValueError(f"edge_vectors must have shape (E, 3), got {edge_vectors.shape}")
        if senders.shape != (E,) or receivers.shape != (E,):
            raise ValueError(
                f"senders and receivers must have shape ({E},), got {senders.shape} and {receivers.shape}"
            )
        if energy_mask.shape != (N,):
            raise ValueError(f"energy_mask must have shape ({N},), got {energy_mask.shape}")
        if N and (species.min() < 0 or species.max() >= len(self.elements)):
            raise ValueError(
                f"species must be indices into the model's elements {list(self.elements)} "
                f"(0..{len(self.elements) - 1}); got values in [{species.min()}, {species.max()}]"
            )
        if E:
            lo = min(senders.min(), receivers.min())
            hi = max(senders.max(), receivers.max())
            if lo < 0 or hi >= N:
                raise ValueError(f"edge atom indices must lie in [0, {N}); got [{lo}, {hi}]")

    def __call__(self, edge_vectors, senders, receivers, species, energy_mask):
        import jax

        edge_vectors = np.asarray(edge_vectors, dtype=np.float64)
        senders = np.asarray(senders)
        receivers = np.asarray(receivers)
        species = np.asarray(species)
        energy_mask = np.asarray(energy_mask)
        if self.validate:
            self._check(edge_vectors, senders, receivers, species, energy_mask)
        n_atoms = species.shape[0]
        n_edges = edge_vectors.shape[0]
        n_pad, e_pad = self.bucket_for(n_atoms, n_edges)
        dt = self._np_dtype
        ev, snd, rcv = self._padded_edges(edge_vectors, senders, receivers, e_pad, n_atoms)  # a padding atom
        spc = np.zeros(n_pad, dtype=np.int32)
        spc[:n_atoms] = species
        msk = np.zeros(n_pad, dtype=dt)
        msk[:n_atoms] = energy_mask

        exe = self._executable(n_pad, e_pad)
        with jax.enable_x64(self._x64):
            outputs = exe(ev, snd, rcv, spc, msk)
            atom_energies = np.asarray(outputs[0])
            dE_dedge = np.asarray(outputs[1])
            if self.committee:  # a committee's uncertainty outputs, beside the contract's two
                self.last_uncertainty = {
                    "atom_energy_std": np.asarray(outputs[2])[:n_atoms].astype(np.float64),
                    "member_forces": np.asarray(outputs[3])[:, :n_atoms].astype(np.float64),
                    "member_energies": np.asarray(outputs[4]).astype(np.float64),
                }
        self.num_calls += 1
        self.last_shape = (n_pad, e_pad)
        return (
            atom_energies[:n_atoms].astype(np.float64),
            dE_dedge[:n_edges].astype(np.float64),
        )


# ----------------------------------------------------------------------------
# assembly (export/README.md, "Assembling forces, stress and virials")


def assemble(edge_vectors, senders, receivers, dE_dedge, n_atoms: int):
    """Forces (n, 3), virial (3, 3) and per-atom virials (n, 3, 3) from dE/dr_e.

    ``F_s -= g_e``, ``F_r += g_e``; ``W = -sum_e r_e (x) g_e``; each edge gives
    ``-1/2 r_e (x) g_e`` to both of its atoms.  Units: eV/A and eV.
    """
    r = np.asarray(edge_vectors, dtype=np.float64).reshape(-1, 3)
    g = np.asarray(dE_dedge, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(senders).reshape(-1)
    t = np.asarray(receivers).reshape(-1)
    forces = np.empty((n_atoms, 3))
    for k in range(3):
        forces[:, k] = np.bincount(t, weights=g[:, k], minlength=n_atoms) - np.bincount(
            s, weights=g[:, k], minlength=n_atoms
        )
    rg = -(r[:, :, None] * g[:, None, :]).reshape(-1, 9)  # -r_e (x) g_e
    virial = rg.sum(axis=0).reshape(3, 3)
    per_atom = np.empty((n_atoms, 9))
    for k in range(9):
        w = 0.5 * rg[:, k]
        per_atom[:, k] = np.bincount(s, weights=w, minlength=n_atoms) + np.bincount(
            t, weights=w, minlength=n_atoms
        )
    return forces, virial, per_atom.reshape(n_atoms, 3, 3)
