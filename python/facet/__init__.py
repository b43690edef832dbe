"""Facet-MD: the Facet equivariant interatomic potential, trained in JAX,
run in ASE (`facet.FacetCalculator`) and LAMMPS (`pair_style facet`)."""

__version__ = "0.1.0"

__all__ = ["FacetCalculator", "lammps_plugin_path", "__version__"]


def __getattr__(name):
    # Lazy: `import facet` stays light (the LAMMPS plugin imports it at start-up).
    if name == "FacetCalculator":
        from facet.calculator import FacetCalculator

        return FacetCalculator
    if name == "lammps_plugin_path":
        from facet._lammps import lammps_plugin_path

        return lammps_plugin_path
    raise AttributeError(f"module 'facet' has no attribute {name!r}")
