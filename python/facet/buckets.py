"""The padding ladder shared by training batches and runtime calls.

Kept in its own dependency-free module so that the runtime (imported by the
LAMMPS plugin at start-up) does not pull in the data pipeline.
"""

from __future__ import annotations


def ladder_ceil(x: int, steps_per_octave: int = 4, minimum: int = 1) -> int:
    """Smallest rung >= max(x, minimum) of the ladder m * 2**k, m in [s, 2s), s = steps_per_octave.

    With s = 4 the rungs are 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32,
    40, ...: rounding up wastes at most 1/s (25 %).
    """
    s = int(steps_per_octave)
    if s < 1:
        raise ValueError("steps_per_octave must be >= 1")
    v = max(int(x), int(minimum), 1)
    k = 0
    while v > 2 * s * (1 << k):  # the octave [s * 2^k, 2s * 2^k] that contains v
        k += 1
    step = 1 << k
    return -(-v // step) * step
