"""ASE calculator for Facet models.

    from facet.calculator import FacetCalculator
    atoms.calc = FacetCalculator("model.hlo")             # an exported model file
    atoms.calc = FacetCalculator.from_checkpoint("run/")   # a training checkpoint, in process

Both run through ``facet.runtime.ModelRunner`` and assemble forces and stress
exactly as ``export/README.md`` prescribes (the LAMMPS pair style does the same
in C++).  Energies in eV, forces in eV/A, stress in eV/A^3 with ASE's sign
(positive = tensile) and Voigt order (xx, yy, zz, yz, xz, xy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from facet import committee
from facet.errors import ModelFileError
from facet.graph import neighbour_list
from facet.runtime import ModelRunner, assemble


class FacetCalculator(Calculator):
    """ASE calculator running a Facet model (an exported file or a ModelRunner).

    Parameters
    ----------
    model:
        path of a model file written by ``python -m facet.export``, or a
        ``facet.runtime.ModelRunner``.
    buckets:
        optional override of the file's shape-bucket policy (see export/README.md).
    runtime:
        ``"jax"`` (default) runs the file's jax program; ``"pjrt"`` runs its StableHLO
        template through the C++ runtime (``facet._pjrt``, no jax), the one the LAMMPS pair
        style uses, with the C++ force/virial assembly.
    plugin, device:
        for ``runtime="pjrt"``: the PJRT plugin library (default: the installed
        xla-cpu-pjrt, or ``$FACET_PJRT_PLUGIN``) and the device kind (``"cpu"``, ``"cuda"``).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "energy_std", "energies_std", "forces_std"]

    def __init__(self, model, *, buckets: dict[str, Any] | None = None, runtime: str = "jax",
                 plugin: str | None = None, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        if runtime not in ("jax", "pjrt"):
            raise ValueError(f"FacetCalculator: runtime must be 'jax' or 'pjrt', got {runtime!r}")
        self.runtime = runtime
        if isinstance(model, ModelRunner):
            self.runner = model
        else:
            try:
                if runtime == "pjrt":
                    from facet import _pjrt

                    self.runner = _pjrt.Model(str(model), plugin=plugin or "", device=device)
                else:
                    self.runner = ModelRunner(model, buckets=buckets)
            except ModelFileError:
                from facet.checkpoint import is_checkpoint

                if is_checkpoint(model):
                    raise ModelFileError(
                        f"{model} is a Facet training checkpoint, not a model file: run it in process "
                        f"with FacetCalculator.from_checkpoint({str(model)!r}), or export it with "
                        f"`python -m facet.export {model} -o model.hlo`") from None
                raise
        self.elements = self.runner.elements
        self.cutoff = self.runner.cutoff
        self._species_of = np.full(len(chemical_symbols), -1, dtype=np.int32)
        for index, symbol in enumerate(self.elements):
            self._species_of[atomic_numbers[symbol]] = index
        self.last_num_edges = 0

    # -- construction from training artefacts ---------------------------------

    @classmethod
    def from_params(cls, config, params, *, dtype: str | None = None, info=None, **kwargs):
        """Calculator for in-memory parameters (e.g. the EMA params during training)."""
        from facet.export import contract_function, model_header

        fn, _, dtype = contract_function(config, params, dtype)
        header = model_header(config, params, dtype, info)
        return cls(ModelRunner((header, fn), buckets=kwargs.pop("buckets", None)), **kwargs)

    @classmethod
    def from_checkpoint(cls, path, *, dtype: str | None = None, **kwargs):
        """Calculator running a training checkpoint's EMA parameters in process.

        ``dtype`` defaults to the checkpoint's; use "float64" for NVE.
        """
        from facet import checkpoint

        config, params, info = checkpoint.load_for_inference(path)
        return cls.from_params(config, params, dtype=dtype, info=info, **kwargs)

    def __repr__(self) -> str:
        return f"FacetCalculator({self.runner!r})"

    # -- evaluation ------------------------------------------------------------

    def species(self, numbers) -> np.ndarray:
        """Model species indices of atomic numbers; ValueError for elements not in the model."""
        numbers = np.asarray(numbers, dtype=np.int64)
        bad = (numbers < 0) | (numbers >= len(self._species_of))
        species = np.where(bad, -1, self._species_of[np.clip(numbers, 0, len(self._species_of) - 1)])
        if (species < 0).any():
            missing = sorted({int(z) for z in numbers[species < 0]})
            names = ", ".join(
                chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}" for z in missing
            )
            raise ValueError(
                f"FacetCalculator: element(s) {names} not in this model, which knows only "
                f"{', '.join(self.elements)}"
            )
        return species.astype(np.int32)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        n = len(atoms)
        species = self.species(atoms.numbers)
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)

        senders, receivers, shifts = neighbour_list(positions, cell, pbc, self.cutoff)
        vectors = positions[senders] - positions[receivers] + shifts.astype(np.float64) @ cell
        if self.runtime == "pjrt":
            from facet import _pjrt

            senders, receivers = senders.astype(np.int32), receivers.astype(np.int32)
            atom_energies, dE_dedge = self.runner(vectors, senders, receivers, species, np.ones(n))
            forces, voigt, _ = _pjrt.assemble(vectors, senders, receivers, dE_dedge, n)
            virial = voigt[[[0, 3, 4], [3, 1, 5], [4, 5, 2]]]  # xx yy zz xy xz yz -> 3x3
        else:
            atom_energies, dE_dedge = self.runner(vectors, senders, receivers, species, np.ones(n))
            forces, virial, _ = assemble(vectors, senders, receivers, dE_dedge, n)
        energy = float(atom_energies.sum())
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            raise RuntimeError(
                "FacetCalculator: the model returned a non-finite energy or forces "
                "(atoms on top of each other?)"
            )
        self.last_num_edges = len(senders)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": atom_energies,
            "forces": forces,
        }
        spread = getattr(self.runner, "last_uncertainty", None)
        if spread is not None:  # a committee: its members' disagreement
            self.results["energy_std"] = float(np.std(spread["member_energies"]))
            self.results["energies_std"] = spread["atom_energy_std"]
            self.results["forces_std"] = committee.force_std(spread["member_forces"])
        volume = abs(float(np.linalg.det(cell))) if pbc.any() else 0.0
        if volume > 1e-12:
            sigma = -virial / volume
            self.results["stress"] = full_3x3_to_voigt_6_stress(0.5 * (sigma + sigma.T))
        elif "stress" in properties:
            raise PropertyNotImplementedError(
                "FacetCalculator: stress needs a periodic system with a 3D cell (nonzero volume)"
            )
