"""A committee of Facet models in one model file: the mean for MD, the spread as uncertainty.

Members are models of one architecture and element list trained with different seeds (or
bootstrap samples): ``python -m facet.train ... --ensemble N`` trains them, and
``python -m facet.export committee CKPT1 CKPT2 ... -o committee.hlo`` writes their
committee. Its one program builds nothing twice (one graph, one neighbour list, one
padding) and evaluates every member on it, returning, beside the contract's two outputs
(export/README.md, "Committee outputs"):

* ``atom_energies``, ``dE_dedge``: the members' mean (what MD integrates);
* ``atom_energy_std`` (N,): each atom's energy standard deviation over members;
* ``member_forces`` (M, N, 3): each member's forces on the graph's nodes, assembled inside
  the program from its dE/d(edge); ``force_std`` turns them into each atom's force
  deviation. A runtime whose graph holds ghost nodes (LAMMPS under MPI) first adds the
  ghost rows to their owners, as it does with the forces, so the deviation stays exact;
* ``member_energies`` (M,): each member's total masked energy (their spread is the
  uncertainty of the total energy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from facet.errors import CheckpointError

COMMITTEE_OUTPUTS = ("atom_energies", "dE_dedge", "atom_energy_std", "member_forces", "member_energies")


def force_std(member_forces: np.ndarray) -> np.ndarray:
    """Each atom's force deviation over the members, sqrt(mean_m |F_m,i - mean_m F_m,i|^2)
    (eV/Å), from member forces of shape (M, N, 3)."""
    deviation = member_forces - member_forces.mean(axis=0)
    return np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=0))


def load_members(paths: Sequence[str | Path]):
    """(model config, [member params], [member info]) of a committee's checkpoints, checked
    to share the architecture, the element list and the cutoff."""
    from facet import checkpoint, model

    if len(paths) < 2:
        raise CheckpointError(f"a committee needs at least two members, got {len(paths)}: export a single model "
                              "with `python -m facet.export CHECKPOINT -o model.hlo` instead")
    configs, params, infos = [], [], []
    for path in paths:
        config, p, info = checkpoint.load_for_inference(path)
        configs.append(config)
        params.append(p)
        infos.append(info)
    first = configs[0]
    cutoff0 = model.cutoff(params[0], first)
    for path, config, p in zip(paths[1:], configs[1:], params[1:]):
        if tuple(config.elements) != tuple(first.elements):
            raise CheckpointError(f"committee members differ in their elements: {paths[0]} has "
                                  f"{list(first.elements)}, {path} has {list(config.elements)}")
        cutoff = model.cutoff(p, config)
        if not math.isclose(cutoff, cutoff0, rel_tol=0, abs_tol=1e-6):
            raise CheckpointError(f"committee members differ in their cutoff: {paths[0]} has {cutoff0:.6g} A, "
                                  f"{path} has {cutoff:.6g} A (train them with train_r_max false)")
        mismatch = sorted(k for k in first.__dataclass_fields__
                          if k not in ("degree_values", "degree_radii") and getattr(config, k) != getattr(first, k))
        if mismatch:
            raise CheckpointError(f"committee members differ in their architecture ({', '.join(mismatch)}): "
                                  f"{paths[0]} and {path}")
        if not (len(config.degree_radii) == len(first.degree_radii)
                and np.allclose(config.degree_radii, first.degree_radii, rtol=0, atol=1e-9)
                and np.allclose(config.degree_values, first.degree_values, rtol=1e-9, atol=1e-12)):
            raise CheckpointError(f"committee members differ in their degree tables (statistics fitted on "
                                  f"different data): {paths[0]} and {path}; train them with "
                                  "`python -m facet.train --ensemble N` (--bootstrap fits them on the whole set)")
    return first, params, infos


def committee_function(config, member_params: Sequence[Any], dtype: str) -> Callable:
    """The committee's contract function (see the module docstring) for these members.

    Members share one architecture and degree table (load_members checks it). Each is
    evaluated in turn on the one graph: a plain loop, not vmap over stacked weights,
    because XLA's CPU backend runs a vmapped model's batched matmuls slower than the
    members one after another (`benchmarks/committee_cost.py --vmap`; 4 facet-tiny members
    on 64 atoms: 63 ms vmapped, 35 ms looped, 12 ms for one member), and compiling four
    vmapped Facet-Small members did not finish in 6 minutes."""
    import jax.numpy as jnp

    from facet import model

    module = model.Facet(config)
    cast = [model.cast_params(p, dtype) for p in member_params]

    def fn(edge_vectors, senders, receivers, species, energy_mask):
        energies, grads, forces = [], [], []
        for params in cast:
            e, g = model.energy_and_edge_gradients(module, params, edge_vectors, senders, receivers, species,
                                                   energy_mask)
            f, _ = model.forces_and_virial(edge_vectors, senders, receivers, g, species.shape[0])
            energies.append(e)
            grads.append(g)
            forces.append(f)
        energies, forces = jnp.stack(energies), jnp.stack(forces)  # (M, N), (M, N, 3)
        member_energies = jnp.sum(energies * energy_mask, axis=1)
        return (jnp.mean(energies, axis=0), sum(grads) / len(grads), jnp.std(energies, axis=0), forces,
                member_energies)

    return fn


def export_committee(paths: Sequence[str | Path], output, dtype: str | None = None, platforms=("cpu",),
                     pjrt: bool = True, info: dict | None = None, buckets: dict | None = None) -> dict[str, Any]:
    """Write the committee of these checkpoints to one model file; returns its header.
    buckets: the file's padding ladder (facet.buckets; default DEFAULT_BUCKETS)."""
    from facet import export, model, modelfile, pjrt_program

    config, params, infos = load_members(paths)
    dtype = dtype or config.dtype
    fn = committee_function(config, params, dtype)
    exported = export.export_program(fn, dtype, platforms, outputs=len(COMMITTEE_OUTPUTS))
    header = export.model_header(config, params[0], dtype, {**(infos[0] or {}), **(info or {})})
    if buckets:
        header["shape_policy"]["buckets"] = dict(buckets)
    header["committee"] = {"members": len(params), "outputs": list(COMMITTEE_OUTPUTS),
                           "member_checkpoints": [Path(p).name for p in paths]}
    header["parameter_count"] = sum(model.count_parameters(p) for p in params)
    extra = pjrt_program.sections(exported) if pjrt else None
    return modelfile.save_model_file(output, exported, header, extra)

