"""pair_style facet under MPI (mpirun from the mpich wheel, the wheel's lmp).

Several ranks use the ghost-atom graph (ghost atoms out to
num_layers x cutoff + skin are nodes with energy_mask 0); their energies and
forces over a 100-step trajectory must reproduce the single-rank (folded
graph) run to 1e-8, for newton on and off, and when a rank owns no atoms.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from lammps_support import (
    OBSERVABLES,
    StandInConfig,
    cluster,
    plugin_path,
    run_lmp,
    sio_triclinic,
    standin_model_file,
    write_lammps_data,
)

pytestmark = [pytest.mark.mpi, pytest.mark.float64]

CONFIG = StandInConfig(num_layers=2, cutoff=4.0)
SKIN = 1.0
COMM_CUTOFF = CONFIG.num_layers * CONFIG.cutoff + SKIN


@pytest.fixture(scope="module", autouse=True)
def _plugin():
    plugin_path()


def trajectory_input(data, *, newton="on", processors="* * *", steps=100, every=10):
    return f"""
plugin load {plugin_path()}
units metal
atom_style atomic
boundary {{boundary}}
newton {newton}
processors {processors}
read_data {data}
pair_style facet {standin_model_file(CONFIG)}
pair_coeff * * Si O
neighbor {SKIN} bin
comm_modify cutoff {COMM_CUTOFF}
velocity all create 900 4928459 loop geom
fix 1 all nve
timestep 0.002
{OBSERVABLES}
thermo_style custom step pe ke etotal press c_sums[1] c_sums[2] c_sums[3] c_sums[4] c_sums[5] c_sums[6] &
    c_sums[7] c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] vol
thermo_modify format float %.17g
thermo 1
dump 1 all custom {every} forces.dump id fx fy fz
dump_modify 1 sort id format float %.17g
run {steps}
"""


def parse_thermo(log_text):
    rows, active = [], False
    for line in log_text.splitlines():
        if line.split()[:2] == ["Step", "PotEng"]:
            active = True
            continue
        if active:
            if line.startswith("Loop time"):
                break
            rows.append([float(v) for v in line.split()])
    return np.array(rows)


def parse_dump(path):
    frames, lines = [], path.read_text().splitlines()
    k = 0
    while k < len(lines):
        if lines[k].startswith("ITEM: NUMBER OF ATOMS"):
            n = int(lines[k + 1])
            start = k + 7  # count, ITEM: BOX BOUNDS + 3 lines, ITEM: ATOMS
            frames.append(np.array([[float(v) for v in line.split()] for line in lines[start:start + n]]))
            k = start + n
        else:
            k += 1
    return np.array(frames)


def run_trajectory(tmp_path, atoms, np_, boundary, box=None, **kw):
    work = tmp_path / f"np{np_}_{kw.get('newton', 'on')}"
    work.mkdir()
    data = work / "structure.data"
    write_lammps_data(data, atoms, ["Si", "O"], box=box)
    text = trajectory_input(data, **kw).replace("{boundary}", boundary)
    proc = run_lmp(text, work, np_=np_, timeout=600)
    log = (work / "log.lammps").read_text() if (work / "log.lammps").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return parse_thermo(log), parse_dump(work / "forces.dump"), log


def compare(a, b, tol=1e-8):
    thermo_a, forces_a, _ = a
    thermo_b, forces_b, _ = b
    assert thermo_a.shape == thermo_b.shape and len(thermo_a) == 101
    # potential energy and total energy, every step
    assert np.abs(thermo_a[:, 1] - thermo_b[:, 1]).max() < tol * max(1, np.abs(thermo_a[:, 1]).max())
    assert np.abs(thermo_a[:, 3] - thermo_b[:, 3]).max() < tol * max(1, np.abs(thermo_a[:, 3]).max())
    # pressure (virial) every step, relative to its scale
    assert np.abs(thermo_a[:, 4] - thermo_b[:, 4]).max() < tol * max(1, np.abs(thermo_a[:, 4]).max())
    # summed per-atom energies and virials agree, and equal the global ones
    # (columns: 5 = sum pe/atom, 6-11 = sum stress/atom, 12-17 = virial pressure, 18 = volume)
    for col in range(5, 18):
        assert np.abs(thermo_a[:, col] - thermo_b[:, col]).max() < tol * max(1, np.abs(thermo_a[:, col]).max())
    for thermo in (thermo_a, thermo_b):
        assert np.abs(thermo[:, 5] - thermo[:, 1]).max() < 1e-9 * max(1, np.abs(thermo[:, 1]).max())
        per_atom = thermo[:, 6:12]  # sum of stress/atom = -W (bar A^3)
        global_ = -thermo[:, 12:18] * thermo[:, 18:19]  # -P_virial V
        assert np.abs(per_atom - global_).max() < 1e-9 * np.abs(global_).max()
    assert forces_a.shape == forces_b.shape
    assert np.abs(forces_a - forces_b).max() < tol
    print(
        f"max |dPE| {np.abs(thermo_a[:, 1] - thermo_b[:, 1]).max():.1e} eV, "
        f"|dEtot| {np.abs(thermo_a[:, 3] - thermo_b[:, 3]).max():.1e} eV, "
        f"|dP| {np.abs(thermo_a[:, 4] - thermo_b[:, 4]).max():.1e} bar, "
        f"|dF| {np.abs(forces_a - forces_b).max():.1e} eV/A over {len(thermo_a) - 1} steps"
    )


def test_np2_np4_reproduce_serial(tmp_path):
    """Triclinic two-element cell (54 atoms)."""
    atoms = sio_triclinic().repeat((2, 1, 1))
    serial = run_trajectory(tmp_path, atoms, 1, "p p p")
    for np_, newton in ((2, "on"), (2, "off"), (4, "on")):
        compare(serial, run_trajectory(tmp_path, atoms, np_, "p p p", newton=newton))


def test_rank_without_atoms(tmp_path):
    """A cluster cut by the rank 0 | rank 1 boundary (x = 0) of a non-periodic
    box split in three along x: rank 2 (x > 12) owns no atom but has ghost
    atoms, and with newton off still takes part in the reverse communication."""
    atoms = cluster(seed=11, n=20)
    atoms.positions -= atoms.positions.mean(axis=0)
    box = ([-12.0, -15.0, -15.0], [24.0, 15.0, 15.0])
    assert (atoms.positions[:, 0] > 0.0).sum() >= 3 and (atoms.positions[:, 0] < 0.0).sum() >= 3
    serial = run_trajectory(tmp_path, atoms, 1, "f f f", box=box)
    multi = run_trajectory(tmp_path, atoms, 3, "f f f", box=box, processors="3 1 1", newton="off")
    nlocal = re.search(r"Nlocal:\s+(\S+) ave\s+(\S+) max\s+(\S+) min", multi[2])
    assert nlocal and float(nlocal.group(3)) == 0.0, "expected a rank with no atoms"
    compare(serial, multi)
