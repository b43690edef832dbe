"""Export a trained Facet model to a self-contained model file, and inspect one.

    python -m facet.export CHECKPOINT -o model.hlo [--dtype float32|float64] [--platforms cpu[,cuda]]
    python -m facet.export inspect model.hlo [--json]

The file holds the EMA parameters baked into a ``jax.export`` program with
symbolic shapes (N atoms, E edges), wrapped in the container of
``facet.modelfile``.  Its contract is ``export/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from facet import modelfile
from facet.buckets import DEFAULT_BUCKETS
from facet.errors import ConfigError, FacetError, exit_with
from facet.modelfile import ModelFileError

DEFAULT_PLATFORMS = ("cpu",)
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
SYMBOLS = "N, E"


# ----------------------------------------------------------------------------
# exporting a contract function


def _x64(enabled: bool):
    import jax

    return jax.enable_x64(enabled)


@contextlib.contextmanager
def _no_source_locations():
    """MLIR locations would carry the exporting machine's file paths into the model file."""
    import jax

    before = jax.config.jax_traceback_in_locations_limit
    jax.config.update("jax_traceback_in_locations_limit", 0)
    try:
        yield
    finally:
        jax.config.update("jax_traceback_in_locations_limit", before)


def export_program(fn: Callable, dtype: str = "float32", platforms: Sequence[str] = DEFAULT_PLATFORMS,
                   outputs: int = 2):
    """Export ``fn(edge_vectors, senders, receivers, species, energy_mask)`` with
    symbolic shapes ``(N, E)``; it returns ``outputs`` arrays of ``dtype`` (2, or a
    committee's 5).  Returns a ``jax.export.Exported``."""
    import jax
    import jax.numpy as jnp
    from jax import export

    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    platforms = tuple(platforms)
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown or not platforms:
        raise ConfigError(f"unknown platform(s) {unknown or platforms}; choose from {KNOWN_PLATFORMS}")
    with _x64(dtype == "float64"), _no_source_locations():
        dt = jnp.dtype(dtype)
        n, e = export.symbolic_shape(SYMBOLS)
        specs = (
            jax.ShapeDtypeStruct((e, 3), dt),
            jax.ShapeDtypeStruct((e,), jnp.int32),
            jax.ShapeDtypeStruct((e,), jnp.int32),
            jax.ShapeDtypeStruct((n,), jnp.int32),
            jax.ShapeDtypeStruct((n,), dt),
        )
        exported = export.export(jax.jit(fn), platforms=platforms)(*specs)
    got = [str(a.dtype) for a in exported.out_avals]
    if got != [dtype] * outputs:
        raise ValueError(f"exported function returns {got}, expected {outputs} {dtype} arrays")
    return exported


def _jsonable(obj: Any) -> Any:
    """Best-effort conversion of metadata (numpy scalars, tuples, paths) to JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def make_header(
    *,
    elements: Sequence[str],
    cutoff: float,
    num_layers: int,
    dtype: str,
    graph_cutoff: float | None = None,
    parameter_count: int | None = None,
    info: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    buckets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model-description part of a file header (``save_model_file`` adds the rest)."""
    from ase.data import atomic_numbers

    elements = [str(e) for e in elements]
    bad = [e for e in elements if e not in atomic_numbers]
    if bad:
        raise ConfigError(f"unknown element symbol(s) {bad}")
    graph_cutoff = float(cutoff if graph_cutoff is None else graph_cutoff)
    info = dict(info or {})
    header: dict[str, Any] = {
        "format": "facet-model",
        "elements": elements,
        "atomic_numbers": [int(atomic_numbers[e]) for e in elements],
        "cutoff": float(cutoff),
        "graph_cutoff": graph_cutoff,
        "num_layers": int(num_layers),
        "dtype": dtype,
        "parameter_count": None if parameter_count is None else int(parameter_count),
        "training": _jsonable(info),
        "units": {"energy": "eV", "length": "Angstrom"},
        "function": {
            "inputs": ["edge_vectors", "senders", "receivers", "species", "energy_mask"],
            "outputs": ["atom_energies", "dE_dedge"],
        },
        "shape_policy": {"kind": "symbolic", "symbols": SYMBOLS, "buckets": dict(buckets or DEFAULT_BUCKETS)},
        "padding": {
            "species": 0,
            "energy_mask": 0.0,
            "edge_length": 2.0 * max(float(cutoff), graph_cutoff) + 1.0,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if model_config is not None:
        header["model_config"] = _jsonable(model_config)
    return header


# ----------------------------------------------------------------------------
# exporting a Facet model


def contract_function(config, params, dtype: str | None = None) -> tuple[Callable, Any, str]:
    """The in-process contract function of a Facet model (params cast to ``dtype``)."""
    from facet import model

    dtype = dtype or getattr(config, "dtype", "float32")
    fn, cast = module_contract_function(model.Facet(config), params, dtype)
    return fn, cast, dtype


def module_contract_function(module, params, dtype: str) -> tuple[Callable, Any]:
    """The contract function of any flax module that maps (edge_vectors, senders,
    receivers, species) to per-atom energies (Facet, the SevenNet port), with its
    parameters cast to ``dtype`` and closed over. Returns (fn, cast params)."""
    from facet import model

    with _x64(dtype == "float64"):
        cast = model.cast_params(params, dtype)

    def fn(edge_vectors, senders, receivers, species, energy_mask):
        return model.energy_and_edge_gradients(
            module, cast, edge_vectors, senders, receivers, species, energy_mask
        )

    return fn, cast


def model_header(config, params, dtype: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    from facet import model

    return make_header(
        elements=config.elements,
        cutoff=model.cutoff(params, config),
        graph_cutoff=config.graph_cutoff,
        num_layers=config.num_layers,
        dtype=dtype,
        parameter_count=model.count_parameters(params),
        info=info,
        model_config=dataclasses.asdict(config),
    )


def export_to_memory(config, params, dtype: str | None = None, platforms=DEFAULT_PLATFORMS, info=None):
    """(header, Exported) without writing a file."""
    fn, _, dtype = contract_function(config, params, dtype)
    exported = export_program(fn, dtype, platforms)
    return model_header(config, params, dtype, info), exported




def export_stages(config, params, dtype: str, platforms=DEFAULT_PLATFORMS, pjrt: bool = True):
    """The stage programs (facet.stages) of a Facet model: (header entry, sections), or
    (None, {}) for a one-layer model. Each has symbolic shapes (N, E) like the model."""
    import jax
    import jax.numpy as jnp
    from jax import export

    from facet import model, pjrt_program, stages

    with _x64(dtype == "float64"):
        cast = model.cast_params(params, dtype)
    programs = stages.programs(model.Facet(config), cast)
    if not programs:
        return None, {}
    feature_size = stages.feature_size(config)
    sections, entries = {}, []
    with _x64(dtype == "float64"), _no_source_locations():
        dt = jnp.dtype(dtype)
        owned, ghosts, e = export.symbolic_shape(", ".join(pjrt_program.STAGE_SYMBOLS))
        shapes = {"features": (owned + ghosts, feature_size), "cotangent": (owned, feature_size),
                  "energy_mask": (owned,)}
        graph = (jax.ShapeDtypeStruct((e, 3), dt), jax.ShapeDtypeStruct((e,), jnp.int32),
                 jax.ShapeDtypeStruct((e,), jnp.int32), jax.ShapeDtypeStruct((owned,), jnp.int32),
                 jax.ShapeDtypeStruct((ghosts,), jnp.int32))
        for program in programs:
            specs = graph + tuple(jax.ShapeDtypeStruct(shapes[name], dt) for name in program.inputs)
            exported = export.export(jax.jit(program.fn), platforms=tuple(platforms))(*specs)
            sections[modelfile.STAGE_JAX_PREFIX + program.name] = modelfile.serialize_program(exported)
            if pjrt:
                for platform in exported.platforms:
                    template = pjrt_program.make_template(exported, platform)
                    sections[pjrt_program.stage_template_section(platform, program.name)] = template.encode()
            entries.append({"name": program.name, "inputs": list(stages.GRAPH_INPUTS + program.inputs),
                            "outputs": list(program.outputs)})
    return {"feature_size": feature_size, "symbols": ", ".join(pjrt_program.STAGE_SYMBOLS), "programs": entries}, \
        sections


def export_model(
    config,
    params,
    path,
    dtype: str | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    info: dict[str, Any] | None = None,
    pjrt: bool = True,
    stages: bool = True,
) -> dict[str, Any]:
    """Export ``params`` (use the EMA parameters) of a Facet model to ``path``.

    ``dtype`` defaults to ``config.dtype``; ``pjrt`` adds the sections that runtimes
    without Python compile (facet.pjrt_program); ``stages`` the per-layer programs that
    LAMMPS exchanges features between on several MPI ranks (facet.stages). Returns the
    header as written.
    """
    from facet import pjrt_program

    header, exported = export_to_memory(config, params, dtype, platforms, info)
    extra = pjrt_program.sections(exported) if pjrt else {}
    if stages:
        header["stages"], stage_sections = export_stages(config, params, header["dtype"], platforms, pjrt)
        extra.update(stage_sections)
    return modelfile.save_model_file(path, exported, header, extra)


# ----------------------------------------------------------------------------
# self-check: the file against the in-process function


def probe_structure(elements: Sequence[str], cutoff: float, n_atoms: int = 8, seed: int = 0):
    """A small random non-periodic cluster with all pairs within the cutoff as edges."""
    rng = np.random.default_rng(seed)
    spacing = min(2.2, 0.45 * cutoff)
    pos = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    pos = pos * spacing + rng.normal(scale=0.1 * spacing, size=pos.shape)
    d = pos[None, :, :] - pos[:, None, :]  # d[r, s] = x_s - x_r
    dist = np.linalg.norm(d, axis=-1)
    receivers, senders = np.nonzero((dist < cutoff) & (dist > 0))
    species = np.arange(len(pos)) % len(elements)
    return d[receivers, senders], senders, receivers, species, np.ones(len(pos))


def self_check(path, fn: Callable, header: dict[str, Any]) -> dict[str, float]:
    """Relative max differences between the model file and the in-process function."""
    from facet.runtime import ModelRunner

    args = probe_structure(header["elements"], header["cutoff"])
    exported_runner = ModelRunner(path)
    inprocess_runner = ModelRunner((header, fn))
    e1, g1 = exported_runner(*args)
    e2, g2 = inprocess_runner(*args)
    return {
        "energy": float(abs(e1.sum() - e2.sum()) / max(abs(e2.sum()), 1e-12)),
        "atom_energies": float(np.max(np.abs(e1 - e2)) / max(np.max(np.abs(e2)), 1e-12)),
        "dE_dedge": float(np.max(np.abs(g1 - g2)) / max(np.max(np.abs(g2)), 1e-12)),
    }


# ----------------------------------------------------------------------------
# inspect


def describe(header: dict[str, Any], path=None, problems: Sequence[str] = ()) -> str:
    def fmt(v, spec=".4g"):
        return "unknown" if v is None else format(v, spec)

    lines = []
    size = Path(path).stat().st_size if path is not None else None
    title = f"{path}: " if path is not None else ""
    lines.append(
        f"{title}Facet model file, format version {header.get('format_version')}"
        + (f", {size / 1e6:.2f} MB" if size is not None else "")
    )
    lines.append(f"  elements:        {' '.join(header['elements'])}")
    lines.append(
        f"  cutoff:          {fmt(header['cutoff'], '.6g')} A (trained r_max; graph cutoff "
        f"{fmt(header.get('graph_cutoff'), '.6g')} A)"
    )
    pc = header.get("parameter_count")
    lines.append(
        f"  model:           {header['num_layers']} message-passing layers, "
        f"{'unknown' if pc is None else f'{pc:,}'} parameters, {header['dtype']}"
    )
    lines.append(f"  platforms:       {', '.join(header['platforms'])}")
    lines.append(
        f"  exported with:   jax {header['jax_version']}, jaxlib {header.get('jaxlib_version', '?')}, "
        f"facet {header.get('facet_version', '?')}, {header.get('created', 'unknown date')}"
    )
    sp = header.get("shape_policy") or {}
    b = sp.get("buckets") or {}
    lines.append(
        f"  shapes:          {sp.get('kind', '?')} ({sp.get('symbols', '?')}); buckets: "
        f"{b.get('steps_per_octave')} steps per octave, min atoms {b.get('min_atoms')}, "
        f"min edges {b.get('min_edges')}"
    )
    lines.append(
        f"  payload:         {header['payload_bytes']:,} bytes, sha256 {header['payload_sha256'][:16]}..."
    )
    sections = header.get("sections") or [{"name": modelfile.JAX_SECTION, "bytes": header["payload_bytes"]}]
    lines.append("  sections:        " + ", ".join(f"{s['name']} ({s['bytes']:,} bytes)" for s in sections))
    if not any(s["name"].startswith("stablehlo_template:") for s in sections):
        lines.append("                   (no PJRT program: runs through the Python runtime only)")
    training = header.get("training") or {}
    if training:
        lines.append("  training:")
        for key, value in training.items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            if len(text) > 100:
                text = text[:97] + "..."
            lines.append(f"    {key}: {text}")
    if problems:
        lines.append("  NOT USABLE HERE:")
        lines.extend(f"    {p}" for p in problems)
    else:
        lines.append("  status:          checksums OK, loadable with this installation")
    return "\n".join(lines)


def inspect(path, as_json: bool = False, out=None) -> int:
    out = sys.stdout if out is None else out
    try:
        header = modelfile.read_header(path, verify_payload=True)
    except ModelFileError as e:
        return exit_with(e)
    problems = []
    try:
        modelfile.check_compatibility(header, str(path))
    except ModelFileError as e:
        problems.append(str(e))
    if as_json:
        print(json.dumps(header, indent=2, sort_keys=True), file=out)
    else:
        print(describe(header, path, problems), file=out)
    return 0


# ----------------------------------------------------------------------------
# command line


def _parse_platforms(text: str) -> tuple[str, ...]:
    platforms = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if bad or not platforms:
        raise argparse.ArgumentTypeError(f"unknown platform(s) {bad}; choose from {','.join(KNOWN_PLATFORMS)}")
    return platforms


def _export_main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m facet.export",
        description="Export a Facet checkpoint (EMA parameters) to a model file for ASE and LAMMPS. "
        "Use `python -m facet.export inspect FILE` to show a model file's header.",
    )
    p.add_argument("checkpoint", help="training checkpoint file (e.g. RUN/checkpoints/best.ckpt)")
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.hlo)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="model dtype (default: the checkpoint's); float64 for NVE-grade energy conservation")
    p.add_argument("--platforms", type=_parse_platforms, default=DEFAULT_PLATFORMS,
                   help="comma-separated jax platforms to export for (default: cpu; e.g. cpu,cuda)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the written file against the in-process model")
    p.add_argument("--no-pjrt", action="store_true",
                   help="leave out the PJRT program (the StableHLO templates that runtimes without Python "
                   "compile); the file then runs through the Python runtime only")
    p.add_argument("--no-stages", action="store_true",
                   help="leave out the per-layer programs; LAMMPS on several MPI ranks then recomputes a "
                   "num_layers x cutoff ghost shell instead of exchanging features between layers")
    p.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                   help="add KEY (JSON or text VALUE) to the header's training section, e.g. "
                   "--note 'trained_on=Si DFT set' --note 'test={\"energy_mae_mev_atom\": 12.3}'")
    args = p.parse_args(argv)
    notes = {}
    for note in args.note:
        key, sep, value = note.partition("=")
        if not sep or not key.strip():
            p.error(f"--note expects KEY=VALUE, got {note!r}")
        try:
            notes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            notes[key.strip()] = value

    from facet import checkpoint

    config, params, info = checkpoint.load_for_inference(args.checkpoint)
    fn, _, dtype = contract_function(config, params, args.dtype)
    exported = export_program(fn, dtype, args.platforms)
    header = model_header(config, params, dtype, {**(info or {}), **notes})
    from facet import pjrt_program

    extra = {} if args.no_pjrt else pjrt_program.sections(exported)
    if not args.no_stages:
        header["stages"], stage_sections = export_stages(config, params, dtype, args.platforms, not args.no_pjrt)
        extra.update(stage_sections)
    header = modelfile.save_model_file(args.output, exported, header, extra)
    print(describe(header, args.output))
    if not args.no_check:
        diffs = self_check(args.output, fn, header)
        tol = 1e-5 if dtype == "float32" else 1e-10
        ok = all(v <= tol for v in diffs.values())
        print(
            "  self-check:      file vs in-process max relative difference "
            + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
            + (" (OK)" if ok else f" (ABOVE {tol:.0e})")
        )
        if not ok:
            return 1
    return 0


def _inspect_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m facet.export inspect",
                                description="Show the header of a Facet model file and check it.")
    p.add_argument("model", help="model file")
    p.add_argument("--json", action="store_true", help="print the raw header as JSON")
    args = p.parse_args(argv)
    return inspect(args.model, as_json=args.json)


def upgrade(source, output) -> dict[str, Any]:
    """Rewrite a model file in the current format with the PJRT sections, from its own jax
    program (no checkpoint needed); the header's model description and training notes stay."""
    from facet import pjrt_program

    header, exported = modelfile.load_model_file(source)
    for key in ("format_version", "payload_sha256", "payload_bytes", "sections"):
        header.pop(key, None)
    return modelfile.save_model_file(output, exported, header, pjrt_program.sections(exported))


def _upgrade_main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m facet.export upgrade",
        description="Rewrite a model file (format 1) in the current format, adding the PJRT program that "
        "pair_style facet runs without Python. Uses the file's own program: no checkpoint needed.")
    p.add_argument("model", help="model file to read")
    p.add_argument("-o", "--output", required=True, help="model file to write (may be the same path)")
    args = p.parse_args(argv)
    try:
        header = upgrade(args.model, args.output)
    except (FacetError, FileNotFoundError) as e:
        return exit_with(e)
    print(describe(header, args.output))
    return 0


def _committee_main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m facet.export committee",
        description="Write the committee of several checkpoints of one architecture (e.g. the members of "
        "`python -m facet.train --ensemble N`) to one model file: MD runs on the members' mean, and ASE "
        "and LAMMPS also get each atom's energy and force standard deviation over the members.")
    p.add_argument("checkpoints", nargs="+", help="member checkpoints (at least two)")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None)
    p.add_argument("--platforms", type=_parse_platforms, default=DEFAULT_PLATFORMS)
    p.add_argument("--no-pjrt", action="store_true", help="leave out the PJRT program")
    args = p.parse_args(argv)
    from facet import committee

    try:
        header = committee.export_committee(args.checkpoints, args.output, args.dtype, args.platforms,
                                            pjrt=not args.no_pjrt)
    except (FacetError, FileNotFoundError) as e:
        return exit_with(e)
    print(describe(header, args.output))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        return _inspect_main(argv[1:])
    if argv and argv[0] == "committee":
        return _committee_main(argv[1:])
    if argv and argv[0] == "upgrade":
        return _upgrade_main(argv[1:])
    if argv and argv[0] == "export":
        argv = argv[1:]
    try:
        return _export_main(argv)
    except (FacetError, FileNotFoundError) as e:
        return exit_with(e)


if __name__ == "__main__":
    sys.exit(main())
