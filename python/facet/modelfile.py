"""The Facet model file: a self-describing container for an exported model.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"FACETMD\\0"
    8       4     format version (uint32)
    12      4     reserved, 0 (uint32)
    16      8     header length H in bytes (uint64)
    24      8     payload length P in bytes (uint64)
    32      32    sha256 of the header bytes
    64      H     header: UTF-8 JSON object
    64+H    P     payload: its sections, one after the other

Sections (format 2; listed in header["sections"] with offset, size and sha256):
``jax_export``, the program serialized with ``jax.export`` (jax's flatbuffer), what the
Python runtime loads; and optionally, for runtimes without Python, one
``stablehlo_template:PLATFORM`` per platform and ``xla_compile_options``
(``facet.pjrt_program``). A format-1 file's payload is its ``jax_export`` section alone.

The header records what the program computes and what it needs (elements,
cutoff, dtype, platforms, exporting jax version, ...) and the sha256 of the
payload.  Every check runs before the payload is handed to jax: nothing in
the file is ever executed as Python (no pickle).  See ``export/README.md``.

This module imports jax only when a program is (de)serialized, so reading a
header is cheap.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

from facet.errors import ModelFileError
from facet.files import atomic_write

MAGIC = b"FACETMD\0"
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
JAX_SECTION = "jax_export"

_PREAMBLE = struct.Struct("<8sIIQQ32s")
PREAMBLE_SIZE = _PREAMBLE.size  # 64
# Sanity limit for the JSON header; real headers are a few kB.
_MAX_HEADER_BYTES = 64 << 20

# Header keys every valid file has.
REQUIRED_KEYS = (
    "format_version",
    "elements",
    "cutoff",
    "num_layers",
    "dtype",
    "platforms",
    "jax_version",
    "calling_convention_version",
    "payload_sha256",
    "payload_bytes",
)

_EXPORT_HINT = "Export a model with `python -m facet.export CHECKPOINT -o model.hlo`."



# ----------------------------------------------------------------------------
# small helpers


def _version_tuple(version: str) -> tuple[int, ...]:
    """'0.10.1' -> (0, 10, 1); '0.5.0.dev20250101' -> (0, 5, 0); ignores suffixes."""
    parts = []
    for piece in str(version).split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def facet_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("facet-md")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    try:
        import facet

        return str(getattr(facet, "__version__", "unknown"))
    except Exception:  # pragma: no cover
        return "unknown"


def x64_available() -> bool:
    """Whether float64 programs can run in this process.

    True when jax offers the scoped ``jax.enable_x64`` switch (used by the
    runtime around every float64 call) or x64 is enabled process-wide.
    """
    import jax

    if callable(getattr(jax, "enable_x64", None)):
        return True
    return bool(jax.config.jax_enable_x64)


def current_platform() -> str:
    """The jax.export platform name of the default backend ('cpu', 'cuda', ...)."""
    import jax

    return jax.export.default_export_platform()


# ----------------------------------------------------------------------------
# writing


def serialize_program(exported) -> bytes:
    try:
        return bytes(exported.serialize())
    except ImportError as e:  # flatbuffers missing
        raise ModelFileError(
            f"cannot serialize the exported program: {e}. "
            "jax.export needs the `flatbuffers` package (pip install flatbuffers)."
        ) from e


def _describe_program(exported) -> dict[str, Any]:
    """Technical header fields that must agree with the program itself."""
    import jax
    import jaxlib

    return {
        "platforms": [str(p) for p in exported.platforms],
        "calling_convention_version": int(exported.calling_convention_version),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jaxlib, "__version__", jax.__version__),
        "inputs": [
            {"shape": [str(d) for d in a.shape], "dtype": str(a.dtype)} for a in exported.in_avals
        ],
        "outputs": [
            {"shape": [str(d) for d in a.shape], "dtype": str(a.dtype)} for a in exported.out_avals
        ],
    }


def build_file_bytes(header: dict[str, Any], sections: dict[str, bytes]) -> bytes:
    """The file: preamble, header (with the section table and checksums filled in), payload."""
    if JAX_SECTION not in sections:
        raise ValueError(f"a model file needs its {JAX_SECTION!r} section")
    header = dict(header)
    header["format_version"] = FORMAT_VERSION
    table, offset = [], 0
    for name, data in sections.items():
        table.append({"name": name, "offset": offset, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        offset += len(data)
    header["sections"] = table
    payload = b"".join(sections.values())
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    header["payload_bytes"] = len(payload)
    header_bytes = json.dumps(header, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")
    preamble = _PREAMBLE.pack(
        MAGIC,
        FORMAT_VERSION,
        0,
        len(header_bytes),
        len(payload),
        hashlib.sha256(header_bytes).digest(),
    )
    return preamble + header_bytes + payload


def save_model_file(path, exported, header: dict[str, Any], extra_sections: dict[str, bytes] | None = None,
                    ) -> dict[str, Any]:
    """Write ``exported`` (a ``jax.export.Exported``) and ``header`` to ``path``.

    The technical fields (platforms, jax versions, calling convention, input and
    output signature, payload checksum and size, format version) are filled in
    from the program itself; ``header`` supplies the model description
    (``elements``, ``cutoff``, ``num_layers``, ``dtype`` and any metadata);
    ``extra_sections`` are written after the program (``facet.pjrt_program.sections``).
    The file is written atomically (temporary file, then rename).
    Returns the header as written.
    """
    header = dict(header)
    header.update(_describe_program(exported))
    header.setdefault("format", "facet-model")
    header.setdefault("facet_version", facet_version())
    missing = [k for k in ("elements", "cutoff", "num_layers", "dtype") if k not in header]
    if missing:
        raise ValueError(f"save_model_file: header lacks {missing}")
    dtypes = {a["dtype"] for a in header["inputs"] if a["dtype"].startswith("float")}
    if dtypes and dtypes != {header["dtype"]}:
        raise ValueError(
            f"save_model_file: header dtype {header['dtype']!r} does not match the program's "
            f"floating inputs {sorted(dtypes)} (float64 needs x64 enabled at export time)"
        )
    data = build_file_bytes(header, {JAX_SECTION: serialize_program(exported), **(extra_sections or {})})
    atomic_write(Path(path), data)
    return _parse(path, data, verify_payload=False)[0]


# ----------------------------------------------------------------------------
# reading


def _read_bytes(path) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory, not a Facet model file. {_EXPORT_HINT}")
    try:
        return p.read_bytes()
    except FileNotFoundError as e:
        raise ModelFileError(f"{p}: no such model file. {_EXPORT_HINT}") from e
    except OSError as e:
        raise ModelFileError(f"{p}: cannot read the model file ({e}).") from e


def _guess_kind(data: bytes) -> str:
    head = data[:16]
    if head and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return " It looks like msgpack data (a training checkpoint?): export it first."
    if head.startswith(b"PK\x03\x04"):
        return " It looks like a zip archive (a checkpoint or another package's model?)."
    if head.lstrip()[:1] in (b"{", b"["):
        return " It looks like a JSON/text file."
    return ""


def _parse(path, data: bytes, *, verify_payload: bool) -> tuple[dict[str, Any], bytes]:
    name = str(path)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data) and data:
            raise ModelFileError(
                f"{name}: truncated Facet model file ({len(data)} bytes). "
                "Copy the file again or re-export it."
            )
        raise ModelFileError(
            f"{name}: not a Facet model file (missing the FACETMD signature).{_guess_kind(data)} "
            f"{_EXPORT_HINT}"
        )
    if len(data) < PREAMBLE_SIZE:
        raise ModelFileError(
            f"{name}: truncated Facet model file ({len(data)} bytes, shorter than the "
            f"{PREAMBLE_SIZE}-byte preamble). Copy the file again or re-export it."
        )
    _, version, _reserved, header_len, payload_len, header_sha = _PREAMBLE.unpack_from(data)
    if version not in SUPPORTED_FORMAT_VERSIONS:
        newer = version > max(SUPPORTED_FORMAT_VERSIONS)
        raise ModelFileError(
            f"{name}: unsupported Facet model format version {version} (this facet "
            f"{facet_version()} reads version(s) {list(SUPPORTED_FORMAT_VERSIONS)}). "
            + (
                "The file was written by a newer Facet: upgrade facet-md, or re-export the "
                "checkpoint with this version."
                if newer
                else "Re-export the checkpoint with this version of Facet."
            )
        )
    expected = PREAMBLE_SIZE + header_len + payload_len
    if header_len > _MAX_HEADER_BYTES or len(data) < expected:
        raise ModelFileError(
            f"{name}: truncated Facet model file: {len(data)} bytes, expected {expected}. "
            "The copy or download was probably incomplete: copy the file again or re-export it."
        )
    if len(data) > expected:
        raise ModelFileError(
            f"{name}: corrupted Facet model file: {len(data) - expected} unexpected bytes after "
            f"the end of the model ({expected} bytes). Copy the file again or re-export it."
        )
    header_bytes = data[PREAMBLE_SIZE : PREAMBLE_SIZE + header_len]
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise ModelFileError(
            f"{name}: checksum mismatch in the header: the file is corrupted. "
            "Copy the file again or re-export it."
        )
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # pragma: no cover (checksummed)
        raise ModelFileError(f"{name}: unreadable header ({e}). Re-export the model.") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{name}: malformed header (not a JSON object). Re-export the model.")
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise ModelFileError(
            f"{name}: malformed header, missing {missing}. Re-export the model."
        )
    if header["format_version"] != version or header["payload_bytes"] != payload_len:
        raise ModelFileError(
            f"{name}: header and preamble disagree (format version or payload size): the file "
            "is corrupted. Re-export the model."
        )
    payload = data[PREAMBLE_SIZE + header_len :]
    if verify_payload and hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ModelFileError(
            f"{name}: checksum mismatch: the exported program is corrupted (sha256 differs "
            "from the one recorded at export). Copy the file again or re-export it."
        )
    return header, payload


def split_sections(header: dict[str, Any], payload: bytes, name: str = "model file") -> dict[str, bytes]:
    """The payload's sections by name (a format-1 payload is its jax_export section)."""
    if "sections" not in header:
        return {JAX_SECTION: payload}
    out = {}
    for entry in header["sections"]:
        start, size = int(entry["offset"]), int(entry["bytes"])
        if start < 0 or size < 0 or start + size > len(payload):
            raise ModelFileError(f"{name}: section {entry.get('name')!r} lies outside the payload: the file "
                                 "is corrupted. Re-export the model.")
        out[str(entry["name"])] = payload[start:start + size]
    if JAX_SECTION not in out:
        raise ModelFileError(f"{name}: no {JAX_SECTION!r} section. Re-export the model.")
    return out


def read_header(path, *, verify_payload: bool = False) -> dict[str, Any]:
    """Read and check a model file's header (structure, version, header checksum).

    With ``verify_payload=True`` the payload checksum is checked too.  Does not
    import jax.
    """
    header, _ = _parse(path, _read_bytes(path), verify_payload=verify_payload)
    return header


def check_compatibility(header: dict[str, Any], name: str = "model file") -> None:
    """Raise ModelFileError unless this process can run the program described by ``header``."""
    import jax
    import jax.export

    exported_with = str(header["jax_version"])
    if _version_tuple(exported_with) > _version_tuple(jax.__version__):
        raise ModelFileError(
            f"{name}: exported with jax {exported_with}, but the installed jax is "
            f"{jax.__version__}, which is older. Programs from a newer jax may not load (or "
            f"fail with misleading errors) on an older one. Install jax>={exported_with}, "
            f"or re-export the checkpoint with jax {jax.__version__}."
        )
    ccv = int(header["calling_convention_version"])
    lo = jax.export.minimum_supported_calling_convention_version
    hi = jax.export.maximum_supported_calling_convention_version
    if not lo <= ccv <= hi:
        raise ModelFileError(
            f"{name}: the program uses jax.export calling convention {ccv}; the installed jax "
            f"{jax.__version__} supports {lo}..{hi}. Re-export the checkpoint with this jax."
        )
    dtype = header["dtype"]
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"{name}: unsupported model dtype {dtype!r}. Re-export the model.")
    if dtype == "float64" and not x64_available():
        raise ModelFileError(
            f"{name}: this is a float64 model but float64 (x64) support is not available in this "
            "process. Enable it before loading (jax.config.update('jax_enable_x64', True) or "
            "JAX_ENABLE_X64=1), or export a float32 model (--dtype float32)."
        )
    platform = current_platform()
    if platform not in header["platforms"]:
        raise ModelFileError(
            f"{name}: exported for platform(s) {header['platforms']} but jax runs on "
            f"{platform!r} here. Re-export with `--platforms {','.join(header['platforms'] + [platform])}`."
        )


def deserialize_program(payload: bytes, name: str = "model file"):
    import jax.export

    try:
        return jax.export.deserialize(bytearray(payload))
    except ImportError as e:
        raise ModelFileError(
            f"{name}: cannot deserialize: {e}. jax.export needs the `flatbuffers` package "
            "(pip install flatbuffers)."
        ) from e
    except Exception as e:
        raise ModelFileError(
            f"{name}: the exported program could not be deserialized ({type(e).__name__}: {e}). "
            "The file is corrupted or was written by an incompatible jax: re-export it."
        ) from e


def _check_program_matches(header: dict[str, Any], exported, name: str) -> None:
    n_out = len((header.get("committee") or {}).get("outputs") or ()) or 2  # a committee adds 3 outputs
    ok = len(exported.in_avals) == 5 and len(exported.out_avals) == n_out
    if ok:
        dts = [str(a.dtype) for a in exported.in_avals]
        want = [header["dtype"], "int32", "int32", "int32", header["dtype"]]
        ok = dts == want and [str(a.dtype) for a in exported.out_avals] == [header["dtype"]] * n_out
    if not ok:
        raise ModelFileError(
            f"{name}: the program's signature {exported.in_avals} -> {exported.out_avals} does not "
            "match the Facet contract (edge_vectors, senders, receivers, species, energy_mask) -> "
            "(atom_energies, dE_dedge). Re-export the model."
        )


def load_model_file(path):
    """Check and load a model file.  Returns ``(header, exported)``.

    Raises ModelFileError (naming the file and what to do) when the file is
    not a Facet model, is truncated or corrupted, has an unsupported format
    version, was exported by a newer jax than the installed one, needs float64
    support that is unavailable, or targets another platform.
    """
    name = str(path)
    header, payload = _parse(path, _read_bytes(path), verify_payload=True)
    check_compatibility(header, name)
    exported = deserialize_program(split_sections(header, payload, name)[JAX_SECTION], name)
    _check_program_matches(header, exported, name)
    return header, exported


STAGE_JAX_PREFIX = "stage_jax:"


def load_stage_programs(path) -> dict[str, Any]:
    """The per-layer programs of a model file (facet.stages; header["stages"]) by name, as
    ``jax.export.Exported``; {} for a file without them (export without --no-stages)."""
    name = str(path)
    header, payload = _parse(path, _read_bytes(path), verify_payload=True)
    check_compatibility(header, name)
    entries = (header.get("stages") or {}).get("programs") or []
    sections = split_sections(header, payload, name)
    out = {}
    for entry in entries:
        section = STAGE_JAX_PREFIX + entry["name"]
        if section not in sections:
            raise ModelFileError(f"{name}: the header lists stage program {entry['name']!r} but the file has no "
                                 f"{section!r} section. Re-export the model.")
        out[entry["name"]] = deserialize_program(sections[section], name)
    return out
