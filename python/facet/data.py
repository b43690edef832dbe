"""Reading labelled structures, filtering outliers and splitting by group.

Units everywhere: Å, eV, eV/Å (forces), eV/Å³ (stress, ASE sign convention:
positive = tensile, ``stress = (1/V) dE/dstrain``, full 3x3).

Supported files (chosen by suffix):

* ``.xyz`` / ``.extxyz`` -- read with ASE's extended-XYZ reader. Labels come
  from the calculator ASE attaches (``energy``, ``forces``, ``stress`` keys) or
  from ``info``/``arrays`` under common alternative names (``REF_energy``,
  ``dft_forces``, ``virial`` ...).
* ``.db`` -- an ASE database; key-value pairs are read as ``info``.
* ``.json`` -- the pyxtal_ff format (e.g. ``pyxtal_ff/datasets/Si/PyXtal/Si.json``):
  a list of records with ``lattice`` (3x3, rows are cell vectors, Å),
  fractional ``coords``, ``elements`` (symbols), ``energy`` and ``force``
  (eV/Å). Arrays may be plain lists or monty-encoded numpy arrays
  (``{"@module": "numpy", "data": ...}``). ``energy`` is the TOTAL energy of
  the cell in eV, not per atom (the Si2 records hold -7.60 eV, i.e.
  -3.80 eV/atom; diamond-like cells reach -5.42 eV/atom, the PBE value for
  Si; pyxtal_ff's own parser and plots divide it by the atom count). Stress
  is not read from this format. The file has no trajectory ids, and some
  records are exact duplicates: records with identical geometry share a group,
  so a split never puts the same structure in two sets.

Groups: a structure's group is taken from the first of the info keys
``group``, ``trajectory``, ``traj_id``, ``trajectory_id``, ``config_type``
that is present; otherwise every structure is its own group.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from facet.errors import ConfigError, DataError

# Keys under which labels are found in ASE info/arrays when there is no calculator.
ENERGY_KEYS = ("energy", "REF_energy", "dft_energy", "total_energy", "Energy")
FORCES_KEYS = ("forces", "REF_forces", "dft_forces", "force", "Forces")
STRESS_KEYS = ("stress", "REF_stress", "dft_stress")
VIRIAL_KEYS = ("virial", "REF_virial", "dft_virial")  # eV; stress = -virial / V
GROUP_KEYS = ("group", "trajectory", "traj_id", "trajectory_id", "config_type")

XYZ_SUFFIXES = (".xyz", ".extxyz")


@dataclass
class Structure:
    """One labelled structure. Labels are None when the file has none."""

    numbers: np.ndarray  # (n,) int atomic numbers
    positions: np.ndarray  # (n, 3) float64, Å
    cell: np.ndarray  # (3, 3) float64, rows are cell vectors (zeros if not periodic)
    pbc: np.ndarray  # (3,) bool
    energy: float | None = None  # total energy, eV
    forces: np.ndarray | None = None  # (n, 3) eV/Å
    stress: np.ndarray | None = None  # (3, 3) eV/Å³, ASE sign convention
    group: str = ""  # trajectory / source-structure id used by splits
    source: str = ""  # "file.extxyz:17"
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.stress is not None:
            self.stress = _full_stress(np.asarray(self.stress, dtype=np.float64))
        if not self.group:
            self.group = self.source

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    @classmethod
    def from_atoms(cls, atoms, group: str | None = None, source: str = "") -> "Structure":
        """Structure from an ase.Atoms, labels from its calculator or info/arrays."""
        results = _calculator_results(atoms)
        energy = results.get("energy", results.get("free_energy"))
        if energy is None:
            energy = _first(atoms.info, ENERGY_KEYS)
        forces = results.get("forces")
        if forces is None:
            forces = _first(atoms.arrays, FORCES_KEYS)
        stress = results.get("stress")
        if stress is None:
            stress = _first(atoms.info, STRESS_KEYS)
        if stress is None:
            virial = _first(atoms.info, VIRIAL_KEYS)
            if virial is not None and atoms.cell.volume > 0:
                stress = -_full_stress(np.asarray(virial, dtype=float)) / atoms.cell.volume
        if group is None:
            found = _first(atoms.info, GROUP_KEYS)
            group = str(found) if found is not None else ""
        return cls(
            numbers=atoms.numbers.copy(),
            positions=atoms.positions.copy(),
            cell=atoms.cell.array.copy(),
            pbc=atoms.pbc.copy(),
            energy=None if energy is None else float(energy),
            forces=None if forces is None else np.array(forces, dtype=np.float64),
            stress=None if stress is None else np.array(stress, dtype=np.float64),
            group=group,
            source=source,
            info=dict(atoms.info),
        )

    def to_atoms(self):
        """ase.Atoms with a SinglePointCalculator holding the labels."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        atoms.info["group"] = self.group
        atoms.info["source"] = self.source
        labels = {"energy": self.energy, "forces": self.forces, "stress": self.stress}
        labels = {k: v for k, v in labels.items() if v is not None}
        if labels:
            atoms.calc = SinglePointCalculator(atoms, **labels)
        return atoms


# ----------------------------------------------------------------------------- reading


def default_dataset_path() -> Path:
    """The packaged default dataset (SiO2, Vashishta potential; see examples/make_default_dataset.py)."""
    return Path(__file__).resolve().parent / "_data" / "default.extxyz"


def read_structures(
    path: str | Path,
    index: str | int | slice = ":",
    *,
    require_energy: bool = True,
    require_forces: bool = True,
) -> list[Structure]:
    """Read labelled structures from .xyz/.extxyz, .db (ASE) or .json (pyxtal_ff).

    `index` selects frames as in ase.io.read (":", "0:100", -1, slice(...)).
    Raises DataError for a missing or unreadable file, an empty selection,
    unknown elements, NaN values, and missing energies/forces when required.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise DataError(f"{path}: is a directory. Give the dataset file itself (.xyz, .extxyz, .db or .json).")
    suffix = path.suffix.lower()
    if suffix in XYZ_SUFFIXES:
        structures = _read_xyz(path)
    elif suffix == ".db":
        structures = _read_db(path)
    elif suffix == ".json":
        structures = _read_pyxtal_json(path)
    else:
        raise DataError(
            f"{path}: unsupported file type '{suffix}'. Use .xyz/.extxyz (extended XYZ), "
            ".db (ASE database) or .json (pyxtal_ff format), e.g. convert with ase.io.write."
        )
    structures = _select(structures, index, path)
    if not structures:
        raise DataError(f"{path}: no structures to read (index {index!r}). Check the file and the index.")
    for s in structures:
        _validate(s, path, require_energy=require_energy, require_forces=require_forces)
    return structures


def _select(items: list, index: str | int | slice, path: Path) -> list:
    if isinstance(index, str):
        from ase.io.formats import string2index

        try:
            index = string2index(index)
        except ValueError as err:
            raise DataError(f"{path}: bad index {index!r} ({err}); use e.g. ':', '0:100' or '-1'.") from None
    if isinstance(index, slice):
        return items[index]
    try:
        return [items[index]]
    except IndexError:
        raise DataError(f"{path}: index {index} is out of range: the file holds {len(items)} structures.") from None


def _read_xyz(path: Path) -> list[Structure]:
    import ase.io

    structures: list[Structure] = []
    frames = ase.io.iread(str(path), index=":", format="extxyz")
    while True:
        frame = len(structures)
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except Exception as err:  # ASE raises many types (XYZError, ValueError, KeyError, IndexError)
            raise _xyz_error(path, frame, err) from None
        structures.append(Structure.from_atoms(atoms, source=f"{path.name}:{frame}"))
    return structures


def _xyz_error(path: Path, frame: int, err: Exception) -> DataError:
    """Turn a parser error into a message naming the frame and, if found, the line."""
    found = find_bad_xyz_line(path)
    where = f"frame {frame}"
    problem = f"{type(err).__name__}: {err}"
    if found is not None:
        line, problem = found
        where += f", line {line}"
    return DataError(
        f"{path}: cannot parse {where}: {problem}. Fix or remove that frame "
        "(extended XYZ: atom count line, comment line with Lattice=/Properties=, one line per atom)."
    )


def find_bad_xyz_line(path: Path) -> tuple[int, str] | None:
    """First line of an (extended) XYZ file that breaks the format, as (1-based line, problem)."""
    from ase.data import atomic_numbers

    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # blank lines between/after frames are tolerated by ASE
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            return i + 1, f"expected the number of atoms, found {lines[i][:60]!r}"
        if i + 1 >= len(lines):
            return i + 1, "the file ends before the comment line of this frame"
        columns = _xyz_columns(lines[i + 1])
        for k in range(n):
            ln = i + 2 + k
            if ln >= len(lines):
                return len(lines), f"the file ends after {k} of {n} atom lines"
            tokens = lines[ln].split()
            if len(tokens) != len(columns):
                return ln + 1, f"expected {len(columns)} columns, found {len(tokens)}"
            for tok, (name, kind) in zip(tokens, columns):
                if kind == "R":
                    try:
                        float(tok)
                    except ValueError:
                        return ln + 1, f"'{tok}' in column {name} is not a number"
                elif name == "species" and tok not in atomic_numbers and tok.capitalize() not in atomic_numbers:
                    return ln + 1, f"unknown element symbol '{tok}'"
        i += 2 + n
    return None


def _xyz_columns(comment: str) -> list[tuple[str, str]]:
    """(name, type) per column from an extxyz Properties= string (plain XYZ: species + pos)."""
    match = re.search(r"Properties=([^\s\"]+)", comment, flags=re.IGNORECASE)
    spec = match.group(1) if match else "species:S:1:pos:R:3"
    parts = spec.split(":")
    columns = []
    for name, kind, count in zip(parts[0::3], parts[1::3], parts[2::3]):
        columns += [(name, kind.upper())] * int(count)
    return columns


def _read_db(path: Path) -> list[Structure]:
    import ase.db

    try:
        db = ase.db.connect(str(path))
        rows = list(db.select())
    except (sqlite3.DatabaseError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a readable ASE database ({err}). "
                        "Recreate it with ase.db.connect().write().") from None
    structures = []
    for row in rows:
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        structures.append(Structure.from_atoms(atoms, source=f"{path.name}:id={row.id}"))
    return structures


def _read_pyxtal_json(path: Path) -> list[Structure]:
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}). "
            "Repair the file or regenerate it."
        ) from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records (pyxtal_ff format), found {type(records).__name__}.")
    structures = []
    first_with_geometry: dict[str, int] = {}
    for k, record in enumerate(records):
        s = _pyxtal_record(record, path, k)
        key = _geometry_key(s)
        s.group = f"{path.name}:{first_with_geometry.setdefault(key, k)}"
        structures.append(s)
    return structures


def _pyxtal_record(record: Any, path: Path, k: int) -> Structure:
    from ase.data import atomic_numbers

    where = f"{path}: record {k}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with lattice/coords/elements/energy/force.")
    missing = [key for key in ("lattice", "coords", "elements") if key not in record]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}. "
                        "Each record needs lattice, coords, elements, energy, force.")
    unknown = [e for e in record["elements"] if e not in atomic_numbers]
    if unknown:
        raise DataError(f"{where}: unknown element symbol(s) {sorted(set(map(str, unknown)))}. Fix the symbols.")
    try:
        cell = _json_array(record["lattice"]).reshape(3, 3)
        frac = _json_array(record["coords"]).reshape(-1, 3)
        forces = record.get("force")
        forces = None if forces is None else _json_array(forces).reshape(-1, 3)
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}: lattice/coords/force are not numeric arrays of the right shape ({err}).") from None
    numbers = np.array([atomic_numbers[e] for e in record["elements"]])
    if len(frac) != len(numbers) or (forces is not None and len(forces) != len(numbers)):
        raise DataError(f"{where}: {len(numbers)} elements but {len(frac)} coords"
                        + ("" if forces is None else f" and {len(forces)} forces") + "; the counts must match.")
    energy = record.get("energy")
    return Structure(
        numbers=numbers,
        positions=frac @ cell,
        cell=cell,
        pbc=True,
        energy=None if energy is None else float(energy),  # total energy (see module docstring)
        forces=forces,
        source=f"{path.name}:{k}",
    )


def _json_array(value: Any) -> np.ndarray:
    if isinstance(value, dict):  # monty-encoded numpy array
        value = value["data"]
    return np.asarray(value, dtype=np.float64)


def _geometry_key(s: Structure) -> str:
    data = np.concatenate([s.numbers.astype(float), s.cell.ravel(), s.positions.ravel()])
    return hashlib.sha1(np.round(data, 8).tobytes()).hexdigest()


def _validate(s: Structure, path: Path, *, require_energy: bool, require_forces: bool) -> None:
    where = f"{path}: structure {s.source}"
    bad = [int(z) for z in s.numbers if not 0 < z <= 118]
    if bad:
        raise DataError(f"{where}: unknown element (atomic number {bad[0]}, e.g. a dummy 'X' atom). Remove or fix it.")
    if s.n_atoms == 0:
        raise DataError(f"{where}: has no atoms. Remove the empty frame.")
    if require_energy and s.energy is None:
        raise DataError(f"{where}: no energy label. Store the total energy (eV) as info 'energy' "
                        "or on the calculator, or read with require_energy=False.")
    if require_forces and s.forces is None:
        raise DataError(f"{where}: no forces. Training needs per-atom 'forces' (eV/Å); add them, "
                        "or read with require_forces=False to train on energies only.")
    if s.forces is not None and s.forces.shape != (s.n_atoms, 3):
        raise DataError(f"{where}: forces have shape {s.forces.shape}, expected ({s.n_atoms}, 3).")
    for name, value in (("positions", s.positions), ("cell", s.cell), ("energy", s.energy),
                        ("forces", s.forces), ("stress", s.stress)):
        if value is not None and not np.all(np.isfinite(value)):
            raise DataError(f"{where}: {name} contains NaN or infinite values. Remove or relabel the structure.")
    if s.pbc.any() and np.linalg.svd(s.cell[s.pbc], compute_uv=False).min() < 1e-8:
        raise DataError(f"{where}: periodic along {s.pbc.tolist()} but those cell vectors are zero or "
                        "linearly dependent. Give a valid cell or set pbc=False for those directions.")


def _calculator_results(atoms) -> dict[str, Any]:
    calc = getattr(atoms, "calc", None)
    return dict(getattr(calc, "results", {}) or {})


def _first(mapping: dict, keys: Iterable[str]) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def _full_stress(stress: np.ndarray) -> np.ndarray:
    """3x3 stress from Voigt (xx, yy, zz, yz, xz, xy), 9 values or 3x3."""
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return stress.reshape(3, 3)


# ----------------------------------------------------------------------------- filters and splits


class RemovedStructures(list):
    """Structures dropped by filter_outliers; `counts` gives the number failing each test."""

    def __init__(self, items: Iterable[Structure], counts: dict[str, int], n_total: int):
        super().__init__(items)
        self.counts = counts
        self.n_total = n_total

    def summary(self) -> str:
        kept = self.n_total - len(self)
        lines = [f"outlier filter: kept {kept} of {self.n_total} structures, removed {len(self)}"]
        lines += [f"  {n:6d} {reason}" for reason, n in self.counts.items()]
        if len(self.counts) > 1:
            lines.append("  (a structure can fail several tests)")
        return "\n".join(lines)

    __str__ = summary


def filter_outliers(
    structures: Sequence[Structure],
    max_energy_per_atom: float | None = None,
    min_energy_per_atom: float | None = None,
    max_abs_force: float | None = None,
) -> tuple[list[Structure], RemovedStructures]:
    """Drop structures outside the given limits. Returns (kept, removed).

    `removed.counts` maps each test to how many structures failed it;
    `print(removed)` gives a summary. Structures without the tested label
    are kept. Example (pyxtal_ff Si): max_energy_per_atom=-3.0, max_abs_force=20.
    """
    tests = []
    if max_energy_per_atom is not None:
        tests.append((f"energy per atom > {max_energy_per_atom} eV",
                      lambda s: s.energy is not None and s.energy / s.n_atoms > max_energy_per_atom))
    if min_energy_per_atom is not None:
        tests.append((f"energy per atom < {min_energy_per_atom} eV",
                      lambda s: s.energy is not None and s.energy / s.n_atoms < min_energy_per_atom))
    if max_abs_force is not None:
        tests.append((f"a force component |F| > {max_abs_force} eV/Å",
                      lambda s: s.forces is not None and np.abs(s.forces).max() > max_abs_force))
    counts = {name: 0 for name, _ in tests}
    kept, removed = [], []
    for s in structures:
        failed = [name for name, test in tests if test(s)]
        for name in failed:
            counts[name] += 1
        (removed if failed else kept).append(s)
    return kept, RemovedStructures(removed, counts, len(structures))


def split_indices(
    structures: Sequence[Structure], ratios: Sequence[float] = (10, 1, 1), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group-aware split of structure indices into (train, valid, test).

    All structures of a group land in the same split. Groups are shuffled with
    the seed, then placed largest first (ties in shuffled order) into the split
    furthest below its target count, so split sizes (in structures) are as close
    to the ratios as the group sizes allow. Deterministic given the seed.
    """
    ratios = np.asarray(ratios, dtype=float)
    if ratios.shape != (3,) or (ratios < 0).any() or ratios.sum() <= 0:
        raise ConfigError(f"ratios must be three non-negative numbers (train, valid, test), got {tuple(ratios)}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(structures):
        groups.setdefault(s.group or s.source or str(i), []).append(i)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    order = sorted(order, key=lambda g: -len(members[g]))  # stable: shuffled order breaks ties
    target = ratios / ratios.sum() * len(structures)
    count = np.zeros(3)
    chosen: list[list[int]] = [[], [], []]
    for g in order:
        deficit = np.where(ratios > 0, target - count, -np.inf)
        k = int(np.argmax(deficit))
        chosen[k] += members[g]
        count[k] += len(members[g])
    return tuple(np.array(sorted(c), dtype=np.int64) for c in chosen)  # type: ignore[return-value]


def split_structures(
    structures: Sequence[Structure],
    ratios: Sequence[float] = (10, 1, 1),
    seed: int = 0,
    return_indices: bool = False,
):
    """(train, valid, test) lists of structures, split by group (see split_indices).

    With return_indices=True returns ((train, valid, test), (train_idx, valid_idx, test_idx)).
    """
    indices = split_indices(structures, ratios, seed)
    parts = tuple([structures[i] for i in idx] for idx in indices)
    return (parts, indices) if return_indices else parts


def save_split_indices(path: str | Path, train: Sequence[int], valid: Sequence[int], test: Sequence[int],
                       n_structures: int | None = None, **metadata: Any) -> None:
    """Store a split as a small JSON file {"train": [...], "valid": [...], "test": [...], ...}."""
    data = {"train": [int(i) for i in train], "valid": [int(i) for i in valid], "test": [int(i) for i in test]}
    if n_structures is not None:
        data["n_structures"] = int(n_structures)
    data.update(metadata)
    Path(path).write_text(json.dumps(data, indent=None) + "\n")


def load_split_indices(path: str | Path, n_structures: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) index arrays from save_split_indices; checks them against n_structures."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: split file not found. Create it with save_split_indices.")
    try:
        data = json.loads(path.read_text())
        parts = tuple(np.asarray(data[k], dtype=np.int64) for k in ("train", "valid", "test"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a split file with train/valid/test index lists ({err}).") from None
    stored_n = data.get("n_structures")
    if n_structures is not None and stored_n is not None and stored_n != n_structures:
        raise DataError(f"{path}: split made for {stored_n} structures but the dataset has {n_structures}. "
                        "Make a new split for this dataset.")
    everything = np.concatenate(parts)
    if len(np.unique(everything)) != len(everything):
        raise DataError(f"{path}: an index appears in more than one split (or twice). Make a new split.")
    if n_structures is not None and len(everything) and (everything.min() < 0 or everything.max() >= n_structures):
        raise DataError(f"{path}: indices out of range for a dataset of {n_structures} structures.")
    return parts  # type: ignore[return-value]


# ----------------------------------------------------------------------------- summaries


def element_list(structures: Iterable[Structure]) -> list[str]:
    """Element symbols present, sorted by atomic number."""
    from ase.data import chemical_symbols

    numbers = set()
    for s in structures:
        numbers.update(int(z) for z in np.unique(s.numbers))
    return [chemical_symbols[z] for z in sorted(numbers)]
