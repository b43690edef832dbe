"""The stand-in model and the Python reference that the LAMMPS tests compare with
(tests/lammps_support.py): the reference's forces and virial are the energy's
derivatives, and the stand-in reaches exactly num_layers x cutoff."""

import numpy as np
import pytest
from lammps_support import STRUCTURES, _atoms, make_runner, reference, sio_triclinic

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


def _energy(atoms, runner):
    return reference(atoms, runner)["energy"]


@pytest.mark.parametrize("name", ["sio_triclinic", "cluster", "small_cell"])
def test_reference_forces_and_virial_match_finite_differences(name):
    runner = make_runner("layers=2")
    atoms = STRUCTURES[name]()
    ref = reference(atoms, runner)
    h = 1e-5
    rng = np.random.default_rng(0)
    for a in rng.choice(len(atoms), size=min(3, len(atoms)), replace=False):
        for d in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, d] += h
            minus.positions[a, d] -= h
            fd = -(_energy(plus, runner) - _energy(minus, runner)) / (2 * h)
            assert abs(fd - ref["forces"][a, d]) < 1e-6
    if all(atoms.pbc):
        # virial W = -dE/d(strain) for a homogeneous deformation
        voigt = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
        for k, (a, b) in enumerate(voigt):
            def strained(s):
                eps = np.eye(3)
                eps[a, b] += s / (1 if a == b else 2)
                eps[b, a] += 0 if a == b else s / 2
                at = atoms.copy()
                at.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                return _energy(at, runner)

            fd = -(strained(h) - strained(-h)) / (2 * h)
            assert abs(fd - ref["virial"][k]) < 1e-6
    assert np.allclose(ref["atom_virials"].sum(axis=0), ref["virial"], atol=1e-12)
    assert np.isclose(ref["atom_energies"].sum(), ref["energy"], atol=1e-12)


def test_standin_reaches_num_layers_times_cutoff():
    """Moving an atom changes the energy of atoms up to L x cutoff away, not further."""
    rc = 3.0
    for layers in (1, 2, 3):
        runner = make_runner(f"cutoff={rc},layers={layers}")
        # a chain with spacing 2.5 A (< rc): atom k is k hops from atom 0
        n = 6
        atoms = _atoms(["Si"] * n, [[2.5 * k, 0, 0] for k in range(n)], np.eye(3) * 40, False)
        moved = atoms.copy()
        moved.positions[n - 1, 1] += 0.3
        d = np.abs(reference(moved, runner)["atom_energies"] - reference(atoms, runner)["atom_energies"])
        hops = np.arange(n)[::-1]  # hops from the moved atom
        assert np.all(d[hops <= layers] > 1e-9)
        assert np.all(d[hops > layers] == 0.0)


def test_standin_padding_and_float32():
    atoms = sio_triclinic()
    r64 = reference(atoms, make_runner("layers=2,dtype=float64"))
    r32 = reference(atoms, make_runner("layers=2,dtype=float32"))
    assert abs(r64["energy"] - r32["energy"]) < 1e-3
    assert np.abs(r64["forces"] - r32["forces"]).max() < 1e-3
    assert np.abs(r64["forces"] - r32["forces"]).max() > 0  # really computed in float32
