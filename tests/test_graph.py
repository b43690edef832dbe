"""Neighbour lists, graphs, padded batches, the loader and the degree table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list

from facet.buckets import padded_sizes
from facet.data import DataError, Structure, default_dataset_path, element_list, read_structures
from facet.graph import (
    BatchLoader,
    GraphBatch,
    average_degree_table,
    batch_graphs,
    build_graph,
    build_graphs,
    degree_radii,
    neighbour_list,
    species_index,
)

TRICLINIC = np.array([[4.1, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.9, 1.1, 3.3]])


def brute_force_edges(positions, cell, pbc, cutoff) -> set[tuple[int, int, int, int, int]]:
    """Independent reference: enumerate enough periodic images of every atom."""
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, float)
    filled = cell.copy()  # non-periodic zero vectors replaced, only to get plane spacings
    for k in range(3):
        if not pbc[k] and not filled[k].any():
            filled[k] = np.eye(3)[k]
    ranges = []
    for k in range(3):
        if pbc[k]:
            # images needed along k: cutoff / plane spacing, plus margin for atoms outside the cell
            spacing = 1.0 / np.linalg.norm(np.linalg.inv(filled)[:, k])
            n = int(np.ceil(cutoff / spacing)) + 2
            ranges.append(range(-n, n + 1))
        else:
            ranges.append(range(0, 1))
    edges = set()
    for shift in itertools.product(*ranges):
        offset = np.array(shift, float) @ cell
        # vector for receiver r and sender s: x_s - x_r + S @ cell
        d = np.linalg.norm(positions[None, :, :] - positions[:, None, :] + offset, axis=-1)
        for r, s in zip(*np.nonzero(d < cutoff)):
            if r == s and not any(shift):
                continue
            edges.add((int(s), int(r), *shift))
    return edges


def as_set(senders, receivers, shifts) -> set[tuple[int, int, int, int, int]]:
    return {(int(s), int(r), *map(int, S)) for s, r, S in zip(senders, receivers, shifts)}


def ase_edges(positions, cell, pbc, cutoff):
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff, self_interaction=False)
    return {(int(b), int(a), *map(int, s)) for a, b, s in zip(i, j, S)}


CASES = {
    # name: (positions, cell, pbc, cutoff)
    "triclinic": (np.random.default_rng(1).random((7, 3)) @ TRICLINIC, TRICLINIC, True, 4.5),
    "small_cell": (np.random.default_rng(2).random((3, 3)) * 2.2, np.diag([2.2, 2.5, 2.0]), True, 5.0),
    "single_atom_self_images": (np.zeros((1, 3)), TRICLINIC * 0.6, True, 4.0),
    "outside_cell": (np.random.default_rng(3).random((5, 3)) * 9 - 3, TRICLINIC, True, 3.5),
    "non_periodic": (np.random.default_rng(4).random((12, 3)) * 6, None, False, 3.0),
    "mixed_pbc": (np.random.default_rng(5).random((6, 3)) @ TRICLINIC, TRICLINIC, [True, False, True], 5.0),
    "slab_zero_vector": (np.random.default_rng(6).random((6, 3)) * 3, np.diag([3.0, 3.2, 0.0]),
                         [True, True, False], 4.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_neighbour_list_matches_brute_force_and_ase(name):
    positions, cell, pbc, cutoff = CASES[name]
    senders, receivers, shifts = neighbour_list(positions, cell, pbc, cutoff)
    got = as_set(senders, receivers, shifts)
    assert len(got) == len(senders), "duplicate edges"
    assert got == brute_force_edges(positions, cell, pbc, cutoff)
    ase_cell = np.zeros((3, 3)) if cell is None else cell
    assert got == ase_edges(positions, ase_cell, np.broadcast_to(pbc, (3,)), cutoff)
    # full list: every edge has its reverse; vectors follow r_e = x_s - x_r + S @ cell
    assert {(r, s, -a, -b, -c) for s, r, a, b, c in got} == got
    vectors = positions[senders] - positions[receivers] + shifts @ ase_cell
    assert np.all(np.linalg.norm(vectors, axis=1) < cutoff)
    assert senders.dtype == np.int32 and receivers.dtype == np.int32


def test_small_cell_has_many_images_and_self_images():
    positions, cell, pbc, cutoff = CASES["single_atom_self_images"]
    senders, receivers, shifts = neighbour_list(positions, cell, pbc, cutoff)
    assert len(senders) > 6 and np.all(senders == 0) and np.all(receivers == 0)
    assert np.all(np.abs(shifts).sum(axis=1) > 0)


def test_neighbour_list_rejects_degenerate_periodic_cell():
    with pytest.raises(DataError, match="cell vectors"):
        neighbour_list(np.zeros((2, 3)), np.diag([3.0, 3.0, 0.0]), True, 3.0)


def si_o_structure(n=6, seed=0, energy=-10.0, with_stress=True) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.diag([4.0, 4.5, 5.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    return Structure(
        numbers=np.array([14, 8] * (n // 2))[:n],
        positions=rng.random((n, 3)) @ cell,
        cell=cell,
        pbc=True,
        energy=energy,
        forces=rng.normal(size=(n, 3)),
        stress=rng.normal(size=(3, 3)) * 0.01 if with_stress else None,
        group=f"g{seed}",
        source=f"test:{seed}",
    )


SPECIES = species_index(["O", "Si"])


def test_species_index_is_position_in_element_list():
    assert SPECIES == {8: 0, 14: 1}


def test_build_graph_labels_and_unknown_element():
    s = si_o_structure()
    g = build_graph(s, 3.5, SPECIES)
    assert g.species.tolist() == [1, 0] * 3
    assert g.shifts.dtype == np.float64 and g.has_stress and g.has_forces
    np.testing.assert_allclose(g.forces, s.forces)
    s.numbers[2] = 26
    with pytest.raises(DataError, match=r"element Fe is not in the model's elements") as err:
        build_graph(s, 3.5, SPECIES)
    assert "test:0" in str(err.value)


def test_graph_without_labels_or_periodicity():
    s = Structure(numbers=[8, 8], positions=[[0, 0, 0], [1.2, 0, 0]], cell=np.zeros((3, 3)), pbc=False)
    g = build_graph(s, 3.0, SPECIES)
    assert g.n_edges == 2 and not g.has_forces and not g.has_stress and g.energy == 0.0


def test_batch_padding_invariants():
    graphs = [build_graph(si_o_structure(n, seed=n), 4.0, SPECIES) for n in (4, 6, 2)]
    n_real = sum(g.n_atoms for g in graphs)
    e_real = sum(g.n_edges for g in graphs)
    n_node, n_edge = padded_sizes(n_real, e_real)
    b = batch_graphs(graphs, n_node, n_edge, n_graph=5)
    assert isinstance(b, GraphBatch)
    assert b.species.shape == (n_node,) and b.senders.shape == (n_edge,) and b.cell.shape == (5, 3, 3)
    assert b.species.dtype == np.int32 and b.node_graph.dtype == np.int32 and b.n_atoms.dtype == np.int32
    # padding atoms and graphs exist and are laid out as documented
    assert not b.node_mask[-1] and not b.graph_mask[-1]
    assert b.node_mask.sum() == n_real and b.edge_mask.sum() == e_real and b.graph_mask.sum() == 3
    assert np.all(b.node_graph[~b.node_mask] == 4) and np.all(b.species[~b.node_mask] == 0)
    assert np.all(b.senders[~b.edge_mask] == n_node - 1) and np.all(b.receivers[~b.edge_mask] == n_node - 1)
    assert np.all(b.edge_shifts[~b.edge_mask] == 0)
    np.testing.assert_array_equal(b.cell[3:], np.tile(np.eye(3), (2, 1, 1)))
    assert b.n_atoms.tolist() == [4, 6, 2, 0, 0]
    assert not b.has_stress[3:].any() and not b.has_forces[3:].any() and np.all(b.energy[3:] == 0)
    # real edges keep their vectors after the atom offsets
    cell_of_edge = b.cell[b.node_graph[b.receivers]]
    vectors = (b.positions[b.senders] - b.positions[b.receivers]
               + np.einsum("ei,eij->ej", b.edge_shifts, cell_of_edge))[b.edge_mask]
    np.testing.assert_allclose(vectors, np.concatenate([g.edge_vectors() for g in graphs]))
    np.testing.assert_array_equal(np.bincount(b.node_graph[b.node_mask]), [4, 6, 2])
    with pytest.raises(ValueError, match="does not fit"):
        batch_graphs(graphs, n_real, n_edge, 5)  # no room for the padding atom


@pytest.fixture(scope="module")
def default_graphs():
    structures = read_structures(default_dataset_path())
    return build_graphs(structures, 5.0, species_index(element_list(structures)))


def test_loader_is_deterministic_and_covers_each_graph_once(default_graphs):
    a = BatchLoader(default_graphs, 32, seed=3)
    b = BatchLoader(default_graphs, 32, seed=3)
    first = a.batch_indices(0)
    assert all(np.array_equal(x, y) for x, y in zip(first, b.batch_indices(0)))
    assert not np.array_equal(first[0], a.batch_indices(1)[0])
    assert sorted(np.concatenate(first).tolist()) == list(range(len(default_graphs)))
    assert len(a) == len(first) == -(-len(default_graphs) // 32)
    batch = next(iter(a))
    assert batch.graph_mask.sum() == 32 and batch.cell.shape[0] == 33
    e = np.array([default_graphs[i].energy for i in first[0]])
    np.testing.assert_allclose(batch.energy[:32], e)


def test_loader_uses_few_shapes_over_epochs(default_graphs):
    loader = BatchLoader(default_graphs, 32, seed=0)
    assert len(loader.distinct_shapes([0])) <= 4
    assert len(loader.distinct_shapes(range(30))) <= 8
    for batch, shape in zip(loader.epoch(0), loader.epoch_shapes(0)):
        assert (batch.species.shape[0], batch.senders.shape[0], batch.cell.shape[0]) == shape


def test_loader_stacks_device_batches(default_graphs):
    loader = BatchLoader(default_graphs[:100], 8, seed=0, num_devices=2)
    batches = list(loader.epoch(0))
    assert len(batches) == 13
    for b in batches:
        assert b.species.ndim == 2 and b.species.shape[0] == 2 and b.cell.shape[:2] == (2, 5)
        assert np.all(~b.node_mask[:, -1]) and np.all(~b.graph_mask[:, -1])
    assert sum(int(b.graph_mask.sum()) for b in batches) == 100
    with pytest.raises(ValueError):
        BatchLoader(default_graphs, 7, num_devices=2)


@pytest.mark.parametrize("devices", [1, 2])
def test_budget_loader_packs_every_graph_once_into_one_shape(default_graphs, devices):
    """Budget batching: one padded shape, every graph exactly once per epoch, and the
    padded work within the budget's margin of the real work (plus the packing slack)."""
    loader = BatchLoader(default_graphs, 16, seed=1, budget=1.1, num_devices=devices)
    assert len(loader.distinct_shapes(range(3))) == 1
    for epoch in range(2):
        batches = list(loader.epoch(epoch))
        indices = np.concatenate(loader.batch_indices(epoch))
        assert sorted(indices.tolist()) == list(range(len(default_graphs)))
        real_atoms = sum(g.n_atoms for g in default_graphs)
        real_edges = sum(g.n_edges for g in default_graphs)
        padded_atoms = sum(b.species.size for b in batches)
        padded_edges = sum(b.senders.size for b in batches)
        assert sum(int(b.graph_mask.sum()) for b in batches) == len(default_graphs)
        # Greedy packing fills each batch to within one graph of a budget.
        assert padded_edges / real_edges < 1.1 * 1.35 and padded_atoms / real_atoms < 1.1 * 1.35
        for b in batches:  # the padding atom and graph always exist
            assert np.all(~b.node_mask[..., -1]) and np.all(~b.graph_mask[..., -1])
    # Resuming at step k lands on the batch the uninterrupted run takes next.
    n0 = len(loader.batch_parts(0))
    assert loader.locate(n0 + 2) == (1, 2) and loader.locate(3) == (0, 3)
    with pytest.raises(ValueError, match="budget must be >= 1"):
        BatchLoader(default_graphs, 16, budget=0.9)


def test_budget_from_reference_graphs_gives_every_subset_one_shape(default_graphs):
    """Fine-tuning rounds train on a few new graphs plus a varying replay sample: with the
    budget taken from the full set, every round pads to the full set's shape (one
    compilation), and each round's batches still hold all of its graphs."""
    full = BatchLoader(default_graphs, 8, budget=1.1)
    rng = np.random.default_rng(0)
    shapes = set()
    for size in (20, 37, 64):
        subset = [default_graphs[i] for i in rng.choice(len(default_graphs), size, replace=False)]
        loader = BatchLoader(subset, 8, budget=1.1, budget_graphs=default_graphs, seed=size)
        shapes |= loader.distinct_shapes(range(2))
        assert sum(int(b.graph_mask.sum()) for b in loader.epoch(0)) == size
    assert shapes == full.distinct_shapes(range(1))


def test_average_degree_table_matches_direct_count(default_graphs):
    graphs = default_graphs[:40]
    radii = degree_radii(5.0)
    assert radii[0] == 0.5 and radii[-1] == 5.0
    table = average_degree_table(graphs)
    n_atoms = sum(g.n_atoms for g in graphs)
    # direct count with ASE's neighbour list (independent of facet.graph)
    distances = np.concatenate(
        [primitive_neighbor_list("d", [True] * 3, g.cell, g.positions, 5.0) for g in graphs]
    )
    for radius, value in zip(radii, table):
        assert value == pytest.approx(np.sum(distances < radius) / n_atoms)
    assert table[-1] > table[0] >= 0
    with pytest.raises(ValueError, match="exceed the graph cutoff"):
        average_degree_table(graphs, [1.0, 6.0])
