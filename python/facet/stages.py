"""The model split at its message-passing layers, for the multi-rank feature exchange.

On several MPI ranks each rank owns some atoms and sees the others within one cutoff
(plus the skin) as ghost atoms. Instead of recomputing the ghost atoms' messages (which
needs ghosts out to num_layers x cutoff), the pair style runs one layer at a time and
exchanges the ghost atoms' node features between layers (cpp/README.md, "Several MPI
ranks"). Layer k is a function of the previous layer's node features h_k (the species
embedding for k = 0) and the edges whose receiver the rank owns:

    forward k   (k < L-1):  h_{k+1} = F_k(h_k, edges)                     (N, feature_size)
    backward k  (k < L-1):  (c_k, dE/d(edge)) = VJP of F_k at h_k, given c_{k+1}
    last                 :  atom energies, dE/d(edge) and c_{L-1} of E = sum_i mask_i eps_i(h_{L-1})

c_k is dE/dh_k. Between layers the ranks copy owned rows of h to their ghost images
(forward) and add the ghost rows of c into their owners (reverse); inputs of ghost rows
that a rank computes itself are never used. Each backward program recomputes its layer's
forward pass, so nothing but h is kept between programs.

Every program takes (edge_vectors, senders, receivers, species) first, then its own
inputs, in this order; ``programs`` lists their names, inputs and outputs, which the
model file's header repeats (export/README.md, "Stage programs").
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

GRAPH_INPUTS = ("edge_vectors", "senders", "receivers", "species")


class StageProgram(NamedTuple):
    name: str
    inputs: tuple[str, ...]  # after GRAPH_INPUTS
    outputs: tuple[str, ...]
    fn: Callable


def feature_size(config) -> int:
    from facet import model
    return model.feature_irreps(config).dim


def programs(module, params) -> list[StageProgram]:
    """The stage programs of a Facet module with its (cast) parameters; [] for one layer."""
    num_layers = module.config.num_layers
    out: list[StageProgram] = []

    def layer(k):
        def apply(edge_vectors, senders, receivers, species, features=None):
            return module.apply(params, edge_vectors, senders, receivers, species, features, stage=k)
        return apply

    for k in range(num_layers - 1):
        f = layer(k)
        if k == 0:
            def forward(ev, s, r, z, f=f):
                return f(ev, s, r, z)

            def backward(ev, s, r, z, cot, f=f):
                _, vjp = jax.vjp(lambda v: f(v, s, r, z), ev)
                return vjp(cot)[0]
            out.append(StageProgram("forward_0", (), ("features",), forward))
            out.append(StageProgram("backward_0", ("cotangent",), ("dE_dedge",), backward))
        else:
            def forward(ev, s, r, z, h, f=f):
                return f(ev, s, r, z, h)

            def backward(ev, s, r, z, h, cot, f=f):
                _, vjp = jax.vjp(lambda v, x: f(v, s, r, z, x), ev, h)
                grad_edges, grad_h = vjp(cot)
                return grad_h, grad_edges
            out.append(StageProgram(f"forward_{k}", ("features",), ("features",), forward))
            out.append(StageProgram(f"backward_{k}", ("features", "cotangent"), ("cotangent", "dE_dedge"),
                                    backward))
    if num_layers > 1:
        f = layer(num_layers - 1)

        def last(ev, s, r, z, h, mask, f=f):
            def total(v, x):
                e = f(v, s, r, z, x)
                return jnp.sum(e * mask), e
            (_, energies), (grad_edges, grad_h) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(ev, h)
            return energies, grad_edges, grad_h
        out.append(StageProgram("last", ("features", "energy_mask"), ("atom_energies", "dE_dedge", "cotangent"),
                                last))
    return out


def evaluate_by_stages(stage_programs, edge_vectors, senders, receivers, species, energy_mask,
                       exchange_forward=None, exchange_reverse=None):
    """Per-atom energies and dE/d(edge) through the stage programs, in the pair style's order.

    ``exchange_forward(h)`` and ``exchange_reverse(c)`` stand for the ranks' communication
    (None: one rank, nothing to exchange). The reference the C++ loop is tested against."""
    by_name = {p.name: p.fn for p in stage_programs}
    num_layers = (len(stage_programs) - 1) // 2 + 1
    graph = (edge_vectors, senders, receivers, species)
    features = [None]
    for k in range(num_layers - 1):
        h = by_name[f"forward_{k}"](*graph, *([] if k == 0 else [features[-1]]))
        features.append(exchange_forward(h) if exchange_forward else h)
    energies, grads, cot = by_name["last"](*graph, features[-1], energy_mask)
    for k in reversed(range(num_layers - 1)):
        cot = exchange_reverse(cot) if exchange_reverse else cot
        if k == 0:
            grads = grads + by_name["backward_0"](*graph, cot)
        else:
            cot, g = by_name[f"backward_{k}"](*graph, features[k], cot)
            grads = grads + g
    return energies, grads
