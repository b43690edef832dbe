"""The model split at its message-passing layers, for the multi-rank feature exchange.

On several MPI ranks each rank owns some atoms and sees the others within one cutoff
(plus the skin) as ghost atoms. Instead of recomputing the ghost atoms' messages (which
needs ghosts out to num_layers x cutoff), the pair style runs one layer at a time and
exchanges the ghost atoms' node features between layers (cpp/README.md, "Several MPI
ranks"). Layer k is a function of the previous layer's node features h_k (the species
embedding for k = 0) and the edges whose receiver the rank owns:

    forward k   (k < L-1):  h_{k+1} = F_k(h_k, edges)        owned rows (O, feature_size)
    backward k  (k < L-1):  (c_k, dE/d(edge)) = VJP of F_k at h_k, given c_{k+1}
    last                 :  atom energies, dE/d(edge) and c_{L-1} of E = sum_i mask_i eps_i(h_{L-1})

c_k is dE/dh_k. A rank computes its owned atoms' rows only (O of them; its G ghost atoms
only send messages): layer k takes h_k for all O + G nodes and gives h_{k+1} for the owned
ones, and backward k takes c_{k+1} for the owned nodes and gives c_k for all. Between
layers the ranks copy owned rows of h to their ghost images (forward) and add the ghost
rows of c into their owners (reverse). Each backward program recomputes its layer's
forward pass, so nothing but h is kept between programs.

Every program takes (edge_vectors, senders, receivers, species_owned, species_ghost) first
(owned nodes are 0..O-1, ghosts O..O+G-1; every receiver is owned), then its own
inputs, in this order; ``programs`` lists their names, inputs and outputs, which the
model file's header repeats (export/README.md, "Stage programs").
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

GRAPH_INPUTS = ("edge_vectors", "senders", "receivers", "species_owned", "species_ghost")


class StageProgram(NamedTuple):
    name: str
    inputs: tuple[str, ...]  # after GRAPH_INPUTS
    outputs: tuple[str, ...]
    fn: Callable


# Rows of each node input and output: all nodes (owned, then ghosts), or the owned ones.
ALL_ROWS = {"features": "inputs", "cotangent": "outputs"}  # features in, cotangents out: every node


def rows(name: str, direction: str) -> str:
    """"all" or "owned": the rows of node input/output ``name`` ("inputs" or "outputs")."""
    return "all" if ALL_ROWS.get(name) == direction else "owned"


def feature_size(config) -> int:
    from facet import model
    return model.feature_irreps(config).dim


def programs(module, params) -> list[StageProgram]:
    """The stage programs of a Facet module with its (cast) parameters; [] for one layer.

    Nodes are the owned atoms (O of them: they receive messages) followed by the ghost atoms
    (G: they only send). Node features come in for all O + G nodes and go out for the owned
    ones; cotangents come in for the owned nodes and go out for all, so a rank computes the
    layers of its own atoms only."""
    num_layers = module.config.num_layers
    out: list[StageProgram] = []

    def layer(k):
        def apply(edge_vectors, senders, receivers, species_owned, species_ghost, features=None):
            species = jnp.concatenate([species_owned, species_ghost])
            return module.apply(params, edge_vectors, senders, receivers, species, features, stage=k,
                                num_receivers=species_owned.shape[0])
        return apply

    for k in range(num_layers - 1):
        f = layer(k)
        if k == 0:
            def forward(ev, s, r, zo, zg, f=f):
                return f(ev, s, r, zo, zg)

            def backward(ev, s, r, zo, zg, cot, f=f):
                _, vjp = jax.vjp(lambda v: f(v, s, r, zo, zg), ev)
                return vjp(cot)[0]
            out.append(StageProgram("forward_0", (), ("features",), forward))
            out.append(StageProgram("backward_0", ("cotangent",), ("dE_dedge",), backward))
        else:
            def forward(ev, s, r, zo, zg, h, f=f):
                return f(ev, s, r, zo, zg, h)

            def backward(ev, s, r, zo, zg, h, cot, f=f):
                _, vjp = jax.vjp(lambda v, x: f(v, s, r, zo, zg, x), ev, h)
                grad_edges, grad_h = vjp(cot)
                return grad_h, grad_edges
            out.append(StageProgram(f"forward_{k}", ("features",), ("features",), forward))
            out.append(StageProgram(f"backward_{k}", ("features", "cotangent"), ("cotangent", "dE_dedge"),
                                    backward))
    if num_layers > 1:
        f = layer(num_layers - 1)

        def last(ev, s, r, zo, zg, h, mask, f=f):
            def total(v, x):
                e = f(v, s, r, zo, zg, x)
                return jnp.sum(e * mask), e
            (_, energies), (grad_edges, grad_h) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(ev, h)
            return energies, grad_edges, grad_h
        out.append(StageProgram("last", ("features", "energy_mask"), ("atom_energies", "dE_dedge", "cotangent"),
                                last))
    return out


def evaluate_by_stages(stage_programs, edge_vectors, senders, receivers, species, energy_mask, num_owned=None,
                       exchange_forward=None, exchange_reverse=None):
    """Per-atom energies of the owned nodes and dE/d(edge) through the stage programs, in the
    pair style's order. Nodes [0, num_owned) are owned (default: all), the rest ghosts.

    ``exchange_forward(h)`` fills the ghost rows of the all-node features h from their owners and
    ``exchange_reverse(c)`` adds ghost rows of an all-node cotangent into their owners' rows
    (None: one rank, nothing to exchange). The reference the C++ loop is tested against."""
    by_name = {p.name: p.fn for p in stage_programs}
    num_layers = (len(stage_programs) - 1) // 2 + 1
    num_owned = len(species) if num_owned is None else num_owned
    graph = (edge_vectors, senders, receivers, species[:num_owned], species[num_owned:])

    def all_rows(owned_rows):  # owned rows computed here, ghost rows from their owners
        owned_rows = np.asarray(owned_rows)
        h = np.zeros((len(species),) + owned_rows.shape[1:], owned_rows.dtype)
        h[:num_owned] = owned_rows
        return exchange_forward(h) if exchange_forward else h

    features = [None]
    for k in range(num_layers - 1):
        h = by_name[f"forward_{k}"](*graph, *([] if k == 0 else [features[-1]]))
        features.append(all_rows(h))
    energies, grads, cot = by_name["last"](*graph, features[-1], energy_mask[:num_owned])
    for k in reversed(range(num_layers - 1)):
        cot = (exchange_reverse(cot) if exchange_reverse else cot)[:num_owned]
        if k == 0:
            grads = grads + by_name["backward_0"](*graph, cot)
        else:
            cot, g = by_name[f"backward_{k}"](*graph, features[k], cot)
            grads = grads + g
    return energies, grads
