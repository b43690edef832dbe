"""The one padding ladder, shared by training batches and runtime calls.

Kept in its own dependency-free module so that the runtime (imported by the
LAMMPS plugin at start-up) does not pull in the data pipeline.
"""

from __future__ import annotations

from typing import Any

from facet.errors import ConfigError

# Default shape-bucket policy (see export/README.md, "Shape policy"). An exported file
# records the policy it was exported with under header["shape_policy"]["buckets"];
# runtimes read it from there.
DEFAULT_BUCKETS: dict[str, Any] = {
    "steps_per_octave": 4,
    "min_atoms": 8,
    "min_edges": 64,
}


def ladder_ceil(x: int, steps_per_octave: int = 4, minimum: int = 1) -> int:
    """Smallest rung >= max(x, minimum) of the ladder m * 2**k, m in [s, 2s), s = steps_per_octave.

    With s = 4 the rungs are 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32,
    40, ...: rounding up wastes at most 1/s (25 %).
    """
    s = int(steps_per_octave)
    if s < 1:
        raise ConfigError(f"steps_per_octave must be >= 1, got {steps_per_octave}")
    v = max(int(x), int(minimum), 1)
    k = 0
    while v > 2 * s * (1 << k):  # the octave [s * 2^k, 2s * 2^k] that contains v
        k += 1
    step = 1 << k
    return -(-v // step) * step


def next_rung(x: int, steps_per_octave: int = 4) -> int:
    """The rung after ``x`` (``x`` itself a rung)."""
    return ladder_ceil(int(x) + 1, steps_per_octave)


def padded_sizes(n_atoms: int, n_edges: int, steps_per_octave: int = 4, min_atoms: int = 8,
                 min_edges: int = 64) -> tuple[int, int]:
    """(padded atoms, padded edges) of a graph or batch: ladder rungs, plus one padding atom.

    The padding atom (which padding edges point at) is added after rounding (rung + 1), so
    that the usual supercell sizes (8, 64, 512 atoms: rungs themselves) waste nothing.
    """
    return (ladder_ceil(n_atoms, steps_per_octave, min_atoms) + 1,
            ladder_ceil(n_edges, steps_per_octave, min_edges))


def stage_padded_sizes(n_owned: int, n_ghosts: int, n_edges: int, steps_per_octave: int = 4, min_atoms: int = 8,
                       min_edges: int = 64) -> tuple[int, int, int]:
    """(padded owned, padded ghosts, padded edges) of a stage program's graph (facet.stages):
    owned atoms and edges as padded_sizes (the padding edges point at the first padding owned
    row), ghosts rounded up to their own rung."""
    o_pad, e_pad = padded_sizes(n_owned, n_edges, steps_per_octave, min_atoms, min_edges)
    return o_pad, ladder_ceil(n_ghosts, steps_per_octave, min_atoms), e_pad
