"""Neighbour lists, per-structure graphs and padded batches (numpy only).

Conventions (shared with the model and every runtime, see export/README.md):

* An edge e carries a message from its sender s (the neighbour) to its
  receiver r (the centre atom). Its vector is
  ``r_e = x_s - x_r + S_e @ cell`` with S_e the integer periodic image shift.
* Full neighbour list: every pair within the cutoff gives both directions.
* An atom's own periodic images (i == j, S != 0) are edges; i == j with
  S == 0 is not. Cells smaller than the cutoff give several edges per pair.

Bucket policy (padded shapes, so that jit compiles a handful of times):

1. Ladder (``facet.buckets.padded_sizes``, the one the runtime uses too): the
   atom count and edge count are rounded up to a geometric ladder ``m * 2**k``
   with ``m`` in ``[s, 2s)`` for ``s = steps_per_octave`` (default 4: ..., 16,
   20, 24, 28, 32, 40, 48, 56, 64, 80, ...), so each rounding wastes at most
   25 %; N is that rung plus one padding atom (at least 9), E at least 64.
2. Shape menu (BatchLoader): N and E vary together, so rounding them
   independently would still give many (N, E) pairs. The loader plans
   `plan_epochs` epochs up front (cheap: only counts), and for every N rung
   seen keeps the largest E rung seen with it. Each batch then takes the
   smallest menu shape that fits it; a batch that fits none (rare, only after
   the planned epochs) gets its own ladder shape. On the default dataset
   (batch 32) this gives about 7 shapes over 50 epochs with ~13 % atom and
   ~28 % edge padding, against 15 shapes in 20 epochs for the bare ladder.
3. The graph count is fixed at G = graphs per batch (per device) + 1, the
   last graph always being padding.

The padding layout is described in GraphBatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .buckets import padded_sizes
from .data import Structure
from .errors import ConfigError, DataError

DEFAULT_STEPS_PER_OCTAVE = 4


# ----------------------------------------------------------------------------- neighbour lists


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray | None, pbc: Sequence[bool] | bool, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (senders, receivers, shifts) of pairs closer than `cutoff`.

    Works for triclinic cells, cells smaller than the cutoff (many images of a
    neighbour, including an atom's own images), non-periodic systems (cell None
    or zeros) and mixed pbc. Edges are sorted by receiver, then sender, then
    shift. Returns int32 (E,), int32 (E,), int32 (E, 3).
    """
    import vesin

    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if pbc.any() and np.linalg.svd(cell[pbc], compute_uv=False).min() < 1e-8:
        raise DataError(f"periodic along {pbc.tolist()} but those cell vectors are zero or linearly dependent: "
                        "give a valid cell or set pbc=False for those directions")
    if len(positions) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 3), np.int32)
    # vesin's vector for pair (i, j, S) is x_j - x_i + S @ cell: i is our receiver, j our sender.
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = calculator.compute(positions, cell, pbc.tolist() if pbc.any() else False, "ijS")
    receivers, senders = i.astype(np.int32), j.astype(np.int32)
    shifts = shifts.astype(np.int32).reshape(-1, 3)
    keep = (senders != receivers) | shifts.any(axis=1)  # never an atom with itself in the same image
    receivers, senders, shifts = receivers[keep], senders[keep], shifts[keep]
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], senders, receivers))
    return senders[order], receivers[order], shifts[order]


def edge_vectors(positions: np.ndarray, cell: np.ndarray, senders, receivers, shifts) -> np.ndarray:
    """r_e = x_s - x_r + S_e @ cell."""
    return positions[senders] - positions[receivers] + np.asarray(shifts, dtype=np.float64) @ cell


# ----------------------------------------------------------------------------- graphs


@dataclass
class Graph:
    """One structure as a graph, with its labels (zeros where a label is missing)."""

    species: np.ndarray  # (n,) int32, index into the model's element list
    positions: np.ndarray  # (n, 3) float64
    cell: np.ndarray  # (3, 3) float64 (zeros if not periodic)
    senders: np.ndarray  # (E,) int32
    receivers: np.ndarray  # (E,) int32
    shifts: np.ndarray  # (E, 3) float64, integer-valued image shifts S_e
    energy: float  # eV (0.0 if unknown)
    forces: np.ndarray  # (n, 3) eV/Å (zeros if unknown)
    stress: np.ndarray  # (3, 3) eV/Å³ (zeros if unknown)
    has_stress: bool
    has_forces: bool
    cutoff: float
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return len(self.species)

    @property
    def n_edges(self) -> int:
        return len(self.senders)

    def edge_vectors(self) -> np.ndarray:
        return edge_vectors(self.positions, self.cell, self.senders, self.receivers, self.shifts)


def species_index(elements: Sequence[str]) -> dict[int, int]:
    """{atomic number: model species index} for the model's element list (index i = elements[i])."""
    from ase.data import atomic_numbers

    return {atomic_numbers[sym]: i for i, sym in enumerate(elements)}


def build_graph(structure: Structure, cutoff: float, species_index: dict[int, int]) -> Graph:
    """Graph of one structure: neighbour list within `cutoff` and model species indices."""
    from ase.data import chemical_symbols

    unknown = sorted({int(z) for z in structure.numbers if int(z) not in species_index})
    if unknown:
        known = [chemical_symbols[z] for z in sorted(species_index)]
        names = ", ".join(chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}" for z in unknown)
        raise DataError(f"structure {structure.source}: element {names} is not in the model's elements {known}. "
                        "Remove these structures or train a model that includes the element.")
    species = np.array([species_index[int(z)] for z in structure.numbers], dtype=np.int32)
    pbc = structure.pbc
    try:
        senders, receivers, shifts = neighbour_list(structure.positions, structure.cell, pbc, cutoff)
    except DataError as err:
        raise DataError(f"structure {structure.source}: {err}") from None
    n = structure.n_atoms
    periodic = bool(pbc.all())
    return Graph(
        species=species,
        positions=structure.positions.astype(np.float64),
        cell=structure.cell.astype(np.float64),
        senders=senders,
        receivers=receivers,
        shifts=shifts.astype(np.float64),
        energy=0.0 if structure.energy is None else float(structure.energy),
        forces=np.zeros((n, 3)) if structure.forces is None else structure.forces.astype(np.float64),
        stress=structure.stress.astype(np.float64) if structure.stress is not None and periodic else np.zeros((3, 3)),
        has_stress=structure.stress is not None and periodic,  # stress needs a volume
        has_forces=structure.forces is not None,
        cutoff=float(cutoff),
        source=structure.source,
    )


def build_graphs(structures: Iterable[Structure], cutoff: float, species_index: dict[int, int]) -> list[Graph]:
    return [build_graph(s, cutoff, species_index) for s in structures]


# ----------------------------------------------------------------------------- padded batches


class GraphBatch(NamedTuple):
    """Padded batch of graphs. Sizes: N atoms, E edges, G graphs (numpy arrays).

    Padding: atoms after the real ones, species 0, position 0, belong to the
    last graph G-1 (always a padding graph), node_mask False. Padding edges
    have senders = receivers = N-1 (always a padding atom), shift 0,
    edge_mask False: their vector is zero, so the model must mask them
    (e.g. a safe norm) before anything singular. Padding graphs have an
    identity cell, zero labels and all has_* flags False.
    """

    species: np.ndarray  # int32 (N,)
    positions: np.ndarray  # float (N, 3)
    node_graph: np.ndarray  # int32 (N,)
    node_mask: np.ndarray  # bool (N,)
    senders: np.ndarray  # int32 (E,)
    receivers: np.ndarray  # int32 (E,)
    edge_shifts: np.ndarray  # float (E, 3)
    edge_mask: np.ndarray  # bool (E,)
    cell: np.ndarray  # float (G, 3, 3)
    graph_mask: np.ndarray  # bool (G,)
    n_atoms: np.ndarray  # int32 (G,)
    energy: np.ndarray  # float (G,)
    forces: np.ndarray  # float (N, 3)
    stress: np.ndarray  # float (G, 3, 3)
    has_stress: np.ndarray  # bool (G,)
    has_forces: np.ndarray  # bool (G,)


def batch_graphs(graphs: Sequence[Graph], n_node: int, n_edge: int, n_graph: int) -> GraphBatch:
    """Concatenate graphs and pad to exactly (n_node, n_edge, n_graph)."""
    n_real = sum(g.n_atoms for g in graphs)
    e_real = sum(g.n_edges for g in graphs)
    if n_real > n_node - 1 or e_real > n_edge or len(graphs) > n_graph - 1:
        raise ValueError(f"batch of {len(graphs)} graphs, {n_real} atoms, {e_real} edges does not fit "
                         f"n_graph={n_graph}, n_node={n_node}, n_edge={n_edge} "
                         "(one padding atom and graph are required)")
    pad_atom, pad_graph = n_node - 1, n_graph - 1
    b = _empty_batch(n_node, n_edge, n_graph)
    atom, edge = 0, 0
    for k, g in enumerate(graphs):
        na, ne = g.n_atoms, g.n_edges
        atoms, edges = slice(atom, atom + na), slice(edge, edge + ne)
        b.species[atoms] = g.species
        b.positions[atoms] = g.positions
        b.node_graph[atoms] = k
        b.node_mask[atoms] = True
        b.forces[atoms] = g.forces
        b.senders[edges] = g.senders + atom
        b.receivers[edges] = g.receivers + atom
        b.edge_shifts[edges] = g.shifts
        b.edge_mask[edges] = True
        b.cell[k] = g.cell
        b.graph_mask[k] = True
        b.n_atoms[k] = na
        b.energy[k] = g.energy
        b.stress[k] = g.stress
        b.has_stress[k] = g.has_stress
        b.has_forces[k] = g.has_forces
        atom, edge = atom + na, edge + ne
    b.node_graph[atom:] = pad_graph
    b.senders[edge:] = pad_atom
    b.receivers[edge:] = pad_atom
    return b


def _empty_batch(n_node: int, n_edge: int, n_graph: int) -> GraphBatch:
    return GraphBatch(
        species=np.zeros(n_node, np.int32),
        positions=np.zeros((n_node, 3)),
        node_graph=np.zeros(n_node, np.int32),
        node_mask=np.zeros(n_node, bool),
        senders=np.zeros(n_edge, np.int32),
        receivers=np.zeros(n_edge, np.int32),
        edge_shifts=np.zeros((n_edge, 3)),
        edge_mask=np.zeros(n_edge, bool),
        cell=np.tile(np.eye(3), (n_graph, 1, 1)),
        graph_mask=np.zeros(n_graph, bool),
        n_atoms=np.zeros(n_graph, np.int32),
        energy=np.zeros(n_graph),
        forces=np.zeros((n_node, 3)),
        stress=np.zeros((n_graph, 3, 3)),
        has_stress=np.zeros(n_graph, bool),
        has_forces=np.zeros(n_graph, bool),
    )


def stack_batches(batches: Sequence[GraphBatch]) -> GraphBatch:
    """Stack same-shape batches along a new leading (device) axis."""
    return GraphBatch(*(np.stack(fields) for fields in zip(*batches)))


class BatchLoader:
    """Epochs of padded batches over prebuilt graphs (neighbour lists computed once).

    Each epoch shuffles the graphs with ``np.random.default_rng((seed, epoch))``
    (deterministic, independent of how many epochs were drawn before). Two ways
    to cut the order into batches:

    * shape menu (``budget=None``): batches of exactly `batch_size` graphs (the
      last one smaller unless drop_last), each padded to the smallest shape of
      a menu of at most `max_shapes` shapes (see the module docstring);
    * budget (``budget=b``): one shape for every batch, with atom and edge
      budgets of b x the mean batch of `batch_size` graphs; graphs are packed
      greedily in the shuffled order until the next one would not fit, so a
      batch holds a varying number of graphs (batch_size on average, at most
      2 x batch_size). Padding then wastes about b - 1 of the real work. The
      mean may be taken over other graphs (``budget_graphs``).

    With num_devices > 1 every batch is split into num_devices sub-batches
    (batch_size / num_devices graphs each, or each packed to the budget), all
    padded to one shape and stacked along a new leading axis (for data-parallel
    training).
    """

    def __init__(
        self,
        graphs: Sequence[Graph],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_devices: int = 1,
        drop_last: bool = False,
        steps_per_octave: int = DEFAULT_STEPS_PER_OCTAVE,
        plan_epochs: int = 8,
        max_shapes: int | None = None,
        budget: float | None = None,
        budget_graphs: Sequence[Graph] | None = None,
    ):
        if batch_size < 1 or num_devices < 1 or batch_size % num_devices:
            raise ConfigError(f"batch_size ({batch_size}) must be a positive multiple of num_devices ({num_devices})")
        if not graphs:
            raise DataError("BatchLoader needs at least one graph")
        if budget is not None and budget < 1.0:
            raise ConfigError(f"budget must be >= 1 (a multiple of the mean batch), got {budget}")
        self.graphs = list(graphs)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_devices = num_devices
        self.drop_last = drop_last
        self.steps_per_octave = steps_per_octave
        self.budget = budget
        self._atoms = np.array([g.n_atoms for g in self.graphs])
        self._edges = np.array([g.n_edges for g in self.graphs])
        self._epoch = 0
        self._plans: dict[int, list[list[np.ndarray]]] = {}
        per_device = batch_size // num_devices
        if budget is None:
            self.n_graph = per_device + 1
            self.shape_menu = self._plan_shapes(plan_epochs)
            if max_shapes is not None and len(self.shape_menu) > max_shapes:
                self.shape_menu = merge_shape_menu(self.shape_menu, max_shapes)
        else:
            # Budgets per device: b x the mean sub-batch, never below the largest graph
            # (+1 atom: a padding atom always exists), rounded up to a multiple of 8. The
            # mean is budget_graphs' when given: loaders over varying sets drawn from one
            # distribution (fine-tuning rounds) then share one shape, so one compilation.
            mean_atoms, mean_edges = ((self._atoms.mean(), self._edges.mean()) if budget_graphs is None else
                                      (np.mean([g.n_atoms for g in budget_graphs]),
                                       np.mean([g.n_edges for g in budget_graphs])))
            round8 = lambda x: int(-(-int(np.ceil(x)) // 8) * 8)  # noqa: E731
            n_node = round8(max(budget * per_device * mean_atoms, self._atoms.max()) + 1)
            n_edge = round8(max(budget * per_device * mean_edges, self._edges.max(), 1))
            self.n_graph = 2 * per_device + 1
            self.shape_menu = [(n_node, n_edge)]

    def __len__(self) -> int:
        """Batches per epoch (with a budget: of epoch 0; others differ by a few)."""
        if self.budget is not None:
            return len(self.batch_parts(0))
        n = len(self.graphs)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.graphs)
        return np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)

    def batch_parts(self, epoch: int) -> list[list[np.ndarray]]:
        """Graph indices of every batch of an epoch, one array per device."""
        if self.budget is None:
            return [np.array_split(idx, self.num_devices) for idx in self.batch_indices(epoch)]
        if epoch not in self._plans:
            if len(self._plans) > 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[epoch] = self._pack(self._order(epoch))
        return self._plans[epoch]

    def _pack(self, order: np.ndarray) -> list[list[np.ndarray]]:
        (n_node, n_edge), max_graphs = self.shape_menu[0], self.n_graph - 1
        parts, current, atoms, edges = [], [], 0, 0
        for i in order:
            a, e = int(self._atoms[i]), int(self._edges[i])
            if current and (atoms + a > n_node - 1 or edges + e > n_edge or len(current) == max_graphs):
                parts.append(np.asarray(current))
                current, atoms, edges = [], 0, 0
            current.append(i)
            atoms, edges = atoms + a, edges + e
        parts.append(np.asarray(current))
        d = self.num_devices
        if len(parts) % d:  # every device needs a part: the last batch gets empty (all-padding) ones
            parts += [np.zeros(0, int)] * (d - len(parts) % d)
        return [parts[k:k + d] for k in range(0, len(parts), d)]

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """Graph indices of every batch of an epoch."""
        if self.budget is not None:
            return [np.concatenate(parts) for parts in self.batch_parts(epoch)]
        order = self._order(epoch)
        return [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, batches to skip in it) of the batch after `step` batches (to resume a run)."""
        if self.budget is None:
            return divmod(step, max(len(self), 1))
        epoch = 0
        while step >= len(self.batch_parts(epoch)):
            step -= len(self.batch_parts(epoch))
            epoch += 1
        return epoch, step

    def _device_parts(self, indices: np.ndarray) -> list[np.ndarray]:
        return np.array_split(indices, self.num_devices)

    def _real_sizes(self, parts: Sequence[np.ndarray]) -> tuple[int, int]:
        """Real (atoms, edges) of a batch: the largest device part decides for all parts."""
        return max(int(self._atoms[p].sum()) for p in parts), max(int(self._edges[p].sum()) for p in parts)

    def _plan_shapes(self, n_epochs: int) -> list[tuple[int, int]]:
        """Shape menu: for every N rung of the planned epochs, the largest E rung seen with it."""
        largest_e: dict[int, int] = {}
        for epoch in range(n_epochs):
            for indices in self.batch_indices(epoch):
                n, e = padded_sizes(*self._real_sizes(self._device_parts(indices)), self.steps_per_octave)
                largest_e[n] = max(largest_e.get(n, 0), e)
        return sorted(largest_e.items())

    def batch_shape(self, indices: np.ndarray) -> tuple[int, int, int]:
        """Padded (N, E, G) of one batch: the smallest menu shape that fits, else its ladder shape."""
        if self.budget is not None:
            return (*self.shape_menu[0], self.n_graph)
        n, e = self._real_sizes(self._device_parts(indices))
        for n_node, n_edge in self.shape_menu:  # sorted by N, so the first fit is the smallest
            if n_node >= n + 1 and n_edge >= e:
                return n_node, n_edge, self.n_graph
        return (*padded_sizes(n, e, self.steps_per_octave), self.n_graph)

    def make_batch(self, indices: np.ndarray) -> GraphBatch:
        """The padded batch of these graphs (shape menu) or of these device parts (budget)."""
        parts = indices if self.budget is not None else self._device_parts(indices)
        n_node, n_edge, n_graph = self.batch_shape(indices)  # with a budget: the one shape
        batches = [batch_graphs([self.graphs[i] for i in p], n_node, n_edge, n_graph) for p in parts]
        return batches[0] if self.num_devices == 1 else stack_batches(batches)

    def epoch(self, epoch: int) -> Iterator[GraphBatch]:
        if self.budget is not None:
            for parts in self.batch_parts(epoch):
                yield self.make_batch(parts)
        else:
            for indices in self.batch_indices(epoch):
                yield self.make_batch(indices)

    def __iter__(self) -> Iterator[GraphBatch]:
        """Iterate over the next epoch (0, 1, 2, ... on successive calls)."""
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self.epoch(epoch)

    def epoch_shapes(self, epoch: int) -> list[tuple[int, int, int]]:
        """Padded (N, E, G) of every batch of an epoch, without building the arrays."""
        return [self.batch_shape(idx) for idx in self.batch_indices(epoch)]

    def distinct_shapes(self, epochs: Iterable[int] = (0,)) -> set[tuple[int, int, int]]:
        """Distinct batch shapes (one jit compilation each) over the given epochs."""
        return {shape for e in epochs for shape in self.epoch_shapes(e)}


def merge_shape_menu(menu: list[tuple[int, int]], max_shapes: int) -> list[tuple[int, int]]:
    """At most max_shapes (N, E) shapes covering the menu: consecutive N rungs are
    merged, each group padded to its largest N and E. Fewer shapes mean fewer
    compilations (tens of seconds each for a training step) for more padding."""
    groups = [g for g in np.array_split(np.arange(len(menu)), max(1, max_shapes)) if len(g)]
    merged, largest_e = [], 0
    for g in groups:
        # Cumulative max of E: a later (larger-N) shape then covers every earlier one.
        largest_e = max(largest_e, max(menu[i][1] for i in g))
        merged.append((max(menu[i][0] for i in g), largest_e))
    return merged


# ----------------------------------------------------------------------------- statistics


def degree_radii(cutoff: float, start: float = 0.5, step: float = 0.25) -> np.ndarray:
    """The radius grid of k(r) tables: start, start + step, ... up to the cutoff."""
    radii = np.arange(start, cutoff + 1e-9, step)
    return radii[radii <= cutoff + 1e-12]


def degree_table(graphs: Sequence[Graph], cutoff: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """k(r) on degree_radii(cutoff), as a model config stores it (FacetConfig.degree_radii,
    degree_values). Values are floored at 1e-3: messages are divided by k(r_max)^p."""
    radii = degree_radii(cutoff)
    values = average_degree_table(graphs, radii)
    return tuple(float(r) for r in radii), tuple(float(max(v, 1e-3)) for v in values)


def average_degree_table(graphs: Sequence[Graph], radii: Sequence[float] | None = None) -> np.ndarray:
    """Average number of neighbours per atom closer than each radius (the model's k(r_max)).

    Radii default to degree_radii(smallest graph cutoff) (0.5, 0.75, ... Å)
    and may not exceed the graph cutoff (edges beyond it do not exist).
    """
    if not graphs:
        raise ValueError("average_degree_table needs at least one graph")
    cutoff = min(g.cutoff for g in graphs)
    radii = degree_radii(cutoff) if radii is None else np.asarray(radii, dtype=np.float64)
    if np.any(radii > cutoff + 1e-12):
        raise ValueError(f"radii up to {radii.max()} Å exceed the graph cutoff {cutoff} Å: the counts would be wrong")
    lengths = np.sort(np.concatenate([np.linalg.norm(g.edge_vectors(), axis=1) for g in graphs]))
    n_atoms = sum(g.n_atoms for g in graphs)
    return np.searchsorted(lengths, radii, side="left") / n_atoms
