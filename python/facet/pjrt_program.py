"""The exported program as runtimes without Python compile it: a StableHLO template.

A model file's jax program has symbolic shapes N (atoms) and E (edges), so that one
file serves every system size. PJRT (XLA's C API, what the C++ runtime calls) compiles
static shapes only, and XLA does not refine symbolic shapes by itself; jax does, at
lowering time. The refined program text for N = n and E = e differs from the one for
other sizes only in integers that are affine in n and e (mostly n or e themselves; a
per-species array gives n times the species count). So the text lowered at three marker
sizes, with each such integer replaced by a slot, is a template: ATOMS_SLOT for N,
EDGES_SLOT for E, and "@@a,b,c@@" for a*N + b*E + c. Filling in a bucket's padded sizes
gives exactly the module jax would lower for that bucket. The export checks this against
jax's own lowering at a fourth size, and refuses to write a template that does not
reproduce it.

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


def stage_template_section(platform: str, name: str) -> str:
    """A stage program's template (facet.stages): section ``stage_template:PLATFORM:NAME``."""
    return f"stage_template:{platform}:{name}"


def refined_text(exported, n_atoms: int, n_edges: int, platform: str) -> str:
    """jax's StableHLO text of the program for fixed sizes, shapes refined, no locations."""
    import jax

    try:
        from jax._src.interpreters.mlir import refine_polymorphic_shapes
    except ImportError as e:  # private jax API: say which jax lacks it
        raise ModelFileError(f"jax {jax.__version__} has no shape refinement for PJRT templates ({e}); "
                             "export with --no-pjrt (the Python runtime still works)") from e
    dtype = exported.in_avals[0].dtype
    sizes = {"N": n_atoms, "E": n_edges}
    specs = tuple(jax.ShapeDtypeStruct(tuple(d if isinstance(d, int) else sizes[str(d)] for d in aval.shape),
                                       aval.dtype) for aval in exported.in_avals)
    with jax.enable_x64(str(dtype) == "float64"):
        lowered = jax.jit(exported.call).trace(*specs).lower(lowering_platforms=(platform,))
        module = refine_polymorphic_shapes(lowered.compiler_ir("stablehlo"))
    return module.operation.get_asm(enable_debug_info=False)


def fill(template: str, n_atoms: int, n_edges: int) -> str:
    """The module of one bucket (what the C++ runtime does, in Python for tests)."""
    text = template.replace(ATOMS_SLOT, str(n_atoms)).replace(EDGES_SLOT, str(n_edges))

    def affine(match):
        a, b, c = (int(x) for x in match.group(1).split(","))
        return str(a * n_atoms + b * n_edges + c)

    return re.sub(r"@@(-?\d+,-?\d+,-?\d+)@@", affine, text)


def _slot(values: list[int]) -> str | None:
    """The slot of an integer that takes these values at MARKER_SIZES (None: not affine in N, E)."""
    (n1, e1), (n2, e2), (n3, e3) = MARKER_SIZES
    det = n1 * (e2 - e3) - e1 * (n2 - n3) + (n2 * e3 - n3 * e2)
    v1, v2, v3 = values
    a_num = v1 * (e2 - e3) - e1 * (v2 - v3) + (v2 * e3 - v3 * e2)  # Cramer's rule, exactly in integers
    b_num = n1 * (v2 - v3) - v1 * (n2 - n3) + (n2 * v3 - n3 * v2)
    c_num = n1 * (e2 * v3 - e3 * v2) - e1 * (n2 * v3 - n3 * v2) + v1 * (n2 * e3 - n3 * e2)
    if a_num % det or b_num % det or c_num % det:
        return None
    a, b, c = a_num // det, b_num // det, c_num // det
    if (a, b, c) == (1, 0, 0):
        return ATOMS_SLOT
    if (a, b, c) == (0, 1, 0):
        return EDGES_SLOT
    return f"@@{a},{b},{c}@@"


def make_template(exported, platform: str) -> str:
    """The program's template for one platform; ModelFileError if it cannot be made exactly."""
    texts = [refined_text(exported, n, e, platform) for n, e in MARKER_SIZES]
    if any("@@" in t for t in texts):
        raise ModelFileError("the program text contains '@@', which marks template slots")
    pieces = [re.split(r"(\d+)", t) for t in texts]
    if any(len(p) != len(pieces[0]) for p in pieces) or any(
            p[i] != pieces[0][i] for p in pieces for i in range(0, len(p), 2)):
        raise ModelFileError("the program's structure depends on the system size: no PJRT template "
                             "(export with --no-pjrt; the Python runtime still works)")
    out = list(pieces[0])
    for i in range(1, len(out), 2):
        values = [p[i] for p in pieces]
        if len(set(values)) == 1:
            continue
        slot = _slot([int(v) for v in values])
        if slot is None:
            raise ModelFileError(f"a size-dependent integer of the program is not affine in N and E ({values}): "
                                 "no PJRT template (export with --no-pjrt)")
        out[i] = slot
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
