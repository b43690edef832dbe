"""pair_style facet with a real (small, randomly initialised) Facet network
exported by facet.export: LAMMPS == the ASE calculator (facet.calculator),
float64 and float32, folded and ghost-atom graphs, and under MPI.

Initialising and exporting the network costs ~30 s, so only one case runs by
default; the rest are marked slow (pytest -m slow)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lammps_support import (
    STRUCTURES,
    lammps_eval,
    plugin_path,
    run_lmp,
    write_lammps_data,
)

pytestmark = pytest.mark.float64  # compared against independent references at 1e-10

TYPE_ELEMENTS = ["Si", "O"]  # the network's element order is (O, Si)


@pytest.fixture(scope="module", autouse=True)
def _plugin():
    plugin_path()


@pytest.fixture(scope="module")
def network_files(tmp_path_factory):
    """A small Facet (3 message-passing layers) with non-trivial parameters,
    exported in float64 and float32."""
    import jax

    from facet import export, model
    from facet.config import FacetConfig

    config = FacetConfig(
        elements=("O", "Si"), graph_cutoff=4.0, r_max_init=3.5,
        hidden_irreps="16x0e+8x1o+4x2e", embedding_channels=16, scalar_channels=16,
        scalar_mlp_hidden=16, mixer_channels=8, mixer_heads=2, mixer_hidden=4,
        degree_radii=(0.5, 2.0, 4.0), degree_values=(0.1, 4.0, 20.0), dtype="float64",
    )
    module = model.Facet(config)
    with jax.enable_x64(True):
        params = model.init(module, jax.random.key(0))
        rng = np.random.default_rng(0)

        def perturb(path, x):  # the layer scales start at zero: make every layer matter
            if "layer_scale" in jax.tree_util.keystr(path):
                return x + 0.7 * rng.normal(size=x.shape)
            return x

        params = model.cast_params(jax.tree_util.tree_map_with_path(perturb, params), np.float64)
    out = tmp_path_factory.mktemp("network")
    files = {}
    for dtype in ("float64", "float32"):
        files[dtype] = str(out / f"tiny-{dtype}.hlo")
        export.export_model(dataclasses.replace(config, dtype=dtype), params, files[dtype], dtype=dtype,
                            stages=dtype == "float64")  # the MPI test runs float64
    return files


def ase_reference(atoms, path):
    """Energy, forces, virial (LAMMPS Voigt order, eV) and per-atom energies
    from facet.calculator.FacetCalculator, sharing the plugin's runner."""
    from facet import lammps_bridge
    from facet.calculator import FacetCalculator

    runner = lammps_bridge.make_runner(path)  # the cached runner LAMMPS uses in this process
    atoms = atoms.copy()
    atoms.calc = FacetCalculator(runner)
    out = dict(
        energy=atoms.get_potential_energy(),
        forces=atoms.get_forces(),
        atom_energies=atoms.get_potential_energies(),
    )
    if atoms.pbc.all():
        s = atoms.get_stress(voigt=True)  # xx yy zz yz xz xy, positive = tensile
        out["virial"] = -atoms.get_volume() * s[[0, 1, 2, 5, 4, 3]]
    return out


def check(out, ref, tol):
    assert abs(out["energy"] - ref["energy"]) < tol * max(1.0, abs(ref["energy"]))
    assert np.abs(out["forces"] - ref["forces"]).max() < tol
    assert np.abs(out["atom_energies"] - ref["atom_energies"]).max() < tol
    if "virial" in ref:
        assert np.abs(out["virial"] - ref["virial"]).max() < tol * max(1.0, np.abs(ref["virial"]).max())
    assert np.abs(out["atom_virials"].sum(axis=0) - out["virial"]).max() < 1e-9 * max(
        1.0, np.abs(out["virial"]).max()
    )


@pytest.mark.parametrize(
    "name",
    ["sio_triclinic", "small_cell", "cluster"],
)
def test_network_float64(network_files, name, tmp_path):
    atoms = STRUCTURES[name]()
    ref = ase_reference(atoms, network_files["float64"])
    assert np.abs(ref["forces"]).max() > 1e-3  # the network is not trivial
    out = lammps_eval(atoms, network_files["float64"], TYPE_ELEMENTS, tmpdir=tmp_path)
    check(out, ref, 1e-8)


@pytest.mark.slow
def test_network_ghost_graph(network_files, tmp_path):
    """The multi-rank graph layout (3 layers deep ghost shell), newton off, on one rank."""
    atoms = STRUCTURES["sio_triclinic"]()
    ref = ase_reference(atoms, network_files["float64"])
    out = lammps_eval(atoms, network_files["float64"], TYPE_ELEMENTS, newton="off",
                      graph="ghost", comm_cutoff=3 * 3.5 + 2.0 + 0.1, tmpdir=tmp_path)
    check(out, ref, 1e-8)


@pytest.mark.slow
def test_network_float32(network_files, tmp_path):
    atoms = STRUCTURES["sio_triclinic"]()
    ref64 = ase_reference(atoms, network_files["float64"])
    ref32 = ase_reference(atoms, network_files["float32"])
    out = lammps_eval(atoms, network_files["float32"], TYPE_ELEMENTS, tmpdir=tmp_path)
    check(out, ref32, 1e-5)  # same float32 program, edges in another order
    assert np.abs(out["forces"] - ref64["forces"]).max() < 1e-4


@pytest.mark.slow
@pytest.mark.mpi
def test_network_mpi(network_files, tmp_path):
    """2 ranks reproduce 1 rank over 30 MD steps with the real network."""
    atoms = STRUCTURES["sio_triclinic"]().repeat((2, 1, 1))
    data = tmp_path / "s.data"
    write_lammps_data(data, atoms, TYPE_ELEMENTS)
    results = {}
    for np_ in (1, 2):
        work = tmp_path / f"np{np_}"
        work.mkdir()
        text = f"""
plugin load {plugin_path()}
units metal
read_data {data}
pair_style facet {network_files['float64']}
pair_coeff * * Si O
neighbor 1.0 bin
comm_modify cutoff {3 * 3.5 + 1.0 + 0.1}
velocity all create 600 87287 loop geom
fix 1 all nve
timestep 0.001
thermo_style custom step pe etotal press
thermo_modify format float %.17g
thermo 1
dump 1 all custom 30 f.dump id fx fy fz
dump_modify 1 sort id format float %.17g
run 30
"""
        proc = run_lmp(text, work, np_=np_, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:]
        from test_lammps_mpi import parse_dump, parse_thermo

        results[np_] = (parse_thermo((work / "log.lammps").read_text()), parse_dump(work / "f.dump"))
    (t1, f1), (t2, f2) = results[1], results[2]
    assert np.abs(t1[:, 1] - t2[:, 1]).max() < 1e-8 * max(1, np.abs(t1[:, 1]).max())
    assert np.abs(f1 - f2).max() < 1e-8
