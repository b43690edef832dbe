"""One error type for everything a user can get wrong, subclassed per area.

Every `python -m facet.*` command catches `FacetError` and prints its message (which names
the problem and the fix) without a traceback. The subclasses that used to be ValueErrors stay
ValueErrors too, so code that catches ValueError keeps working.
"""

from __future__ import annotations

import sys


class FacetError(Exception):
    """A problem the user can fix; the message says what it is and what to do."""


class ConfigError(FacetError, ValueError):
    """A setting of TrainConfig/FacetConfig or a config file that cannot be used."""


class DataError(FacetError, ValueError):
    """A dataset problem; the message names the file, the problem and what to do."""


class ModelFileError(FacetError, ValueError):
    """A Facet model file cannot be used; the message names the file and the fix."""


class CheckpointError(FacetError, ValueError):
    """A training checkpoint (Facet's, or another package's to convert) that cannot be read."""


class RuntimeSetupError(FacetError, ValueError):
    """A model file that is valid but cannot run here, or inputs it cannot run on."""


class BridgeError(FacetError):
    """A problem with the LAMMPS pair style's model spec or its Python runner."""


def exit_with(err: BaseException) -> int:
    """What a command-line entry point does with a user error: one line on stderr, status 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2
