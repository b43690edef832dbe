"""The model split at its layers (facet.stages) against the whole model: on one rank, and
on simulated ranks that exchange ghost features and cotangents as the pair style does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.neighborlist import neighbor_list
from test_model import evaluate, sio2_like, species_of

from facet import model, stages

pytestmark = pytest.mark.float64


N_PAD, E_PAD = 64, 1536  # one padded shape for every graph here: each program compiles once


@pytest.fixture(scope="module")
def programs(tiny_model):
    cfg, module, params = tiny_model
    return {p.name: jax.jit(p.fn) for p in stages.programs(module, params)}


def pad_graph(cfg, vectors, senders, receivers, n_nodes):
    """Padding edges on a padding node, longer than the cutoff (export/README.md's padding)."""
    pad_e = E_PAD - len(senders)
    assert n_nodes < N_PAD and pad_e >= 0
    vectors = np.concatenate([np.reshape(vectors, (-1, 3)), np.tile([2 * cfg.graph_cutoff + 1, 0, 0], (pad_e, 1))])
    senders = np.concatenate([senders, np.full(pad_e, n_nodes)]).astype(np.int32)
    receivers = np.concatenate([receivers, np.full(pad_e, n_nodes)]).astype(np.int32)
    return vectors, senders, receivers


def test_stage_programs_compose_to_the_model(tiny_model, programs):
    cfg, module, params = tiny_model
    atoms = sio2_like(seed=3)
    i, j, S = neighbor_list("ijS", atoms, cfg.graph_cutoff)
    vec, s, r = pad_graph(cfg, atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array, j, i, len(atoms))
    z = np.zeros(N_PAD, np.int32)
    z[:len(atoms)] = species_of(atoms, cfg)
    mask = np.zeros(N_PAD)
    mask[:len(atoms)] = 1.0
    mask[::4] = 0.0  # ghost-like nodes: energies not counted
    e_ref, g_ref = jax.jit(model.energy_and_edge_gradients, static_argnums=0)(module, params, vec, s, r, z, mask)
    progs = stages.programs(module, params)
    assert [p.name for p in progs] == ["forward_0", "backward_0", "forward_1", "backward_1", "last"]
    assert cfg.num_layers == 3
    e, g = stages.evaluate_by_stages([p._replace(fn=programs[p.name]) for p in progs], vec, s, r, z, mask)
    np.testing.assert_allclose(e, e_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-12)
    assert np.abs(g_ref).max() > 0.01
    assert programs["forward_0"](vec, s, r, z[:40], z[40:]).shape == (40, stages.feature_size(cfg))


@pytest.mark.slow  # the LAMMPS runs of tests/test_lammps_exchange.py check the same end to end
def test_simulated_ranks_with_feature_exchange_match_serial(tiny_model, programs):
    """Three 'ranks' own slabs of a periodic triclinic cell; each sees only ghost images
    within one cutoff, computes messages for its own atoms, and exchanges features and
    cotangents after each layer. Energies, per-atom energies and forces equal the serial
    model's."""
    cfg, module, params = tiny_model
    progs = programs
    atoms = sio2_like(seed=5, n=(3, 1, 1))
    e_serial, atom_e_serial, f_serial, _ = evaluate(cfg, module, params, atoms)
    n_ranks = 3
    owner = np.minimum((atoms.get_scaled_positions()[:, 0] * n_ranks).astype(int), n_ranks - 1)
    i_all, j_all, s_all = neighbor_list("ijS", atoms, cfg.graph_cutoff)
    z_all = species_of(atoms, cfg)
    ranks = []
    for r in range(n_ranks):
        nodes = [(a, (0, 0, 0)) for a in np.flatnonzero(owner == r)]
        index = {node: k for k, node in enumerate(nodes)}
        senders, receivers, vectors = [], [], []
        for i, j, s in zip(i_all, j_all, s_all):
            if owner[i] != r:
                continue
            key = (j, tuple(int(x) for x in s))
            if key not in index:
                index[key] = len(nodes)
                nodes.append(key)
            senders.append(index[key])
            receivers.append(index[(i, (0, 0, 0))])
            vectors.append(atoms.positions[j] - atoms.positions[i] + s @ atoms.cell.array)
        vectors, senders, receivers = pad_graph(cfg, vectors, senders, receivers, len(nodes))
        pad_n = N_PAD - len(nodes)
        atom_of = np.array([a for a, _ in nodes] + [-1] * pad_n)
        owned = np.array([owner[a] == r and s == (0, 0, 0) for a, s in nodes] + [False] * pad_n)
        ranks.append(dict(atom_of=atom_of, owned=owned, vec=np.array(vectors), s=np.array(senders, np.int32),
                          r=np.array(receivers, np.int32), z=np.where(atom_of >= 0, z_all[atom_of], 0),
                          mask=owned.astype(float), ghost=(~owned) & (atom_of >= 0), O=int(owned.sum())))
    row_of = {}  # global atom -> (rank, owned row)
    for r, rank in enumerate(ranks):
        for k in np.flatnonzero(rank["owned"]):
            row_of[rank["atom_of"][k]] = (r, k)

    def forward(hs):  # ghost rows <- their owners' rows
        out = [np.array(h) for h in hs]
        for rank, h in zip(ranks, out):
            for k in np.flatnonzero(rank["ghost"]):
                src, row = row_of[rank["atom_of"][k]]
                h[k] = hs[src][row]
        return out

    def reverse(cs):  # ghost rows added into their owners' rows, then cleared
        out = [np.array(c) for c in cs]
        for rank, c in zip(ranks, cs):
            for k in np.flatnonzero(rank["ghost"]):
                dst, row = row_of[rank["atom_of"][k]]
                out[dst][row] += c[k]
        for rank, c in zip(ranks, out):
            c[~rank["owned"]] = 0.0
        return out

    graph = [(rk["vec"], rk["s"], rk["r"], rk["z"][:rk["O"]], rk["z"][rk["O"]:]) for rk in ranks]

    def expand(outs):
        full = []
        for rank, x in zip(ranks, outs):
            h = np.zeros((N_PAD,) + x.shape[1:])
            h[:rank["O"]] = x
            full.append(h)
        return full

    h1 = forward(expand([progs["forward_0"](*g) for g in graph]))
    h2 = forward(expand([progs["forward_1"](*g, x) for g, x in zip(graph, h1)]))
    lasts = [progs["last"](*g, x, rk["mask"][:rk["O"]]) for g, x, rk in zip(graph, h2, ranks)]
    grads = [np.array(out[1]) for out in lasts]
    cot = reverse([out[2] for out in lasts])
    back = [progs["backward_1"](*g, x, c[:rk["O"]]) for g, x, c, rk in zip(graph, h1, cot, ranks)]
    grads = [g + b[1] for g, b in zip(grads, back)]
    cot = reverse([b[0] for b in back])
    grads = [g + progs["backward_0"](*gr, c[:rk["O"]]) for g, gr, c, rk in zip(grads, graph, cot, ranks)]

    atom_e = np.zeros(len(atoms))
    forces = np.zeros((len(atoms), 3))
    for rank, out, g in zip(ranks, lasts, grads):
        owned = rank["owned"]
        atom_e[rank["atom_of"][owned]] = np.asarray(out[0])[owned[:rank["O"]]]
        real = rank["atom_of"][rank["r"]] >= 0
        np.add.at(forces, rank["atom_of"][rank["r"][real]], g[real])
        np.add.at(forces, rank["atom_of"][rank["s"][real]], -g[real])
        assert rank["ghost"].sum() > 0  # it really had ghosts
    np.testing.assert_allclose(atom_e, atom_e_serial, rtol=0, atol=1e-12)
    assert abs(atom_e.sum() - e_serial) < 1e-10
    np.testing.assert_allclose(forces, f_serial, rtol=0, atol=1e-10)
    assert jnp.abs(f_serial).max() > 0.1  # the comparison is not between zeros
