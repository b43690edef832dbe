"""The exported program as runtimes without Python compile it: a StableHLO template.

A model file's jax program has symbolic shapes N (atoms) and E (edges), so that one
file serves every system size. PJRT (XLA's C API, what the C++ runtime calls) compiles
static shapes only, and XLA does not refine symbolic shapes by itself; jax does, at
lowering time. The refined program text for N = n and E = e differs from the one for
other sizes only in integers that equal n or e. So the text lowered at marker sizes, with
each such integer replaced by a slot (ATOMS_SLOT, EDGES_SLOT), is a template: substituting
a bucket's padded sizes gives exactly the module jax would lower for that bucket. The
export checks this against jax's own lowering at another size, and refuses to write a
template that does not reproduce it.

Stored per platform in the model file (section ``stablehlo_template:PLATFORM``, UTF-8
MLIR text), with XLA compile options (section ``xla_compile_options``, a serialized
``CompileOptionsProto``). See export/README.md, "Sections".
"""

from __future__ import annotations

import re

from facet.errors import ModelFileError

ATOMS_SLOT = "@@N@@"
EDGES_SLOT = "@@E@@"
COMPILE_OPTIONS_SECTION = "xla_compile_options"
# No other integer in a Facet program equals these sizes (primes, far from channel counts).
MARKER_SIZES = ((1009, 20011), (1201, 30011), (1409, 40009))
CHECK_SIZE = (1601, 50021)


def template_section(platform: str) -> str:
    return f"stablehlo_template:{platform}"


def refined_text(exported, n_atoms: int, n_edges: int, platform: str) -> str:
    """jax's StableHLO text of the program for fixed sizes, shapes refined, no locations."""
    import jax
    import jax.numpy as jnp

    try:
        from jax._src.interpreters.mlir import refine_polymorphic_shapes
    except ImportError as e:  # private jax API: say which jax lacks it
        raise ModelFileError(f"jax {jax.__version__} has no shape refinement for PJRT templates ({e}); "
                             "export with --no-pjrt (the Python runtime still works)") from e
    dtype = exported.in_avals[0].dtype
    specs = (jax.ShapeDtypeStruct((n_edges, 3), dtype), jax.ShapeDtypeStruct((n_edges,), jnp.int32),
             jax.ShapeDtypeStruct((n_edges,), jnp.int32), jax.ShapeDtypeStruct((n_atoms,), jnp.int32),
             jax.ShapeDtypeStruct((n_atoms,), dtype))
    with jax.enable_x64(str(dtype) == "float64"):
        lowered = jax.jit(exported.call).trace(*specs).lower(lowering_platforms=(platform,))
        module = refine_polymorphic_shapes(lowered.compiler_ir("stablehlo"))
    return module.operation.get_asm(enable_debug_info=False)


def fill(template: str, n_atoms: int, n_edges: int) -> str:
    """The module of one bucket (what the C++ runtime does, in Python for tests)."""
    return template.replace(ATOMS_SLOT, str(n_atoms)).replace(EDGES_SLOT, str(n_edges))


def make_template(exported, platform: str) -> str:
    """The program's template for one platform; ModelFileError if it cannot be made exactly."""
    texts = [refined_text(exported, n, e, platform) for n, e in MARKER_SIZES]
    if any(ATOMS_SLOT in t or EDGES_SLOT in t for t in texts):
        raise ModelFileError(f"the program text contains a template slot marker ({ATOMS_SLOT} or {EDGES_SLOT})")
    pieces = [re.split(r"(\d+)", t) for t in texts]
    if any(len(p) != len(pieces[0]) for p in pieces) or any(
            p[i] != pieces[0][i] for p in pieces for i in range(0, len(p), 2)):
        raise ModelFileError("the program's structure depends on the system size: no PJRT template "
                             "(export with --no-pjrt; the Python runtime still works)")
    atoms = [str(n) for n, _ in MARKER_SIZES]
    edges = [str(e) for _, e in MARKER_SIZES]
    out = list(pieces[0])
    for i in range(1, len(out), 2):
        values = [p[i] for p in pieces]
        if len(set(values)) == 1:
            continue
        if values == atoms:
            out[i] = ATOMS_SLOT
        elif values == edges:
            out[i] = EDGES_SLOT
        else:
            raise ModelFileError(f"a size-dependent integer of the program is neither N nor E ({values}): "
                                 "no PJRT template (export with --no-pjrt)")
    template = "".join(out)
    if fill(template, *CHECK_SIZE) != refined_text(exported, *CHECK_SIZE, platform):
        raise ModelFileError("the PJRT template does not reproduce jax's lowering at another size "
                             "(export with --no-pjrt)")
    return template


def compile_options() -> bytes:
    """Default XLA compile options, serialized (PJRT_Client_Compile takes them as bytes)."""
    from jax._src.lib import xla_client

    return xla_client.CompileOptions().SerializeAsString()


def sections(exported) -> dict[str, bytes]:
    """The model-file sections a PJRT runtime needs: one template per platform, compile options."""
    out = {template_section(p): make_template(exported, p).encode() for p in exported.platforms}
    out[COMPILE_OPTIONS_SECTION] = compile_options()
    return out
