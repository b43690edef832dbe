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

Stage programs (facet.stages) have three symbols, O owned atoms, G ghost atoms and E
edges: their slots are @@O@@, @@G@@, @@E@@ and "@@a,b,c,d@@" for a*O + b*G + c*E + d.

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
# Marker sizes per symbol set: no other integer in a Facet program equals them (primes far
# from channel counts). One more marker than symbols pins each slot's affine form; CHECK_SIZES
# is the independent size the template must reproduce.
MARKERS = {
    ("N", "E"): ((1009, 20011), (1201, 30011), (1409, 40009)),
    ("O", "G", "E"): ((1009, 1213, 20011), (1201, 1429, 30011), (1409, 1019, 40009), (1601, 1811, 25013)),
}
CHECKS = {("N", "E"): (1601, 50021), ("O", "G", "E"): (1823, 1031, 50021)}
MARKER_SIZES = MARKERS[("N", "E")]
CHECK_SIZE = CHECKS[("N", "E")]
STAGE_SYMBOLS = ("O", "G", "E")  # facet.stages: owned nodes, ghost nodes, edges


def template_section(platform: str) -> str:
    return f"stablehlo_template:{platform}"


def stage_template_section(platform: str, name: str) -> str:
    """A stage program's template (facet.stages): section ``stage_template:PLATFORM:NAME``."""
    return f"stage_template:{platform}:{name}"


def symbols_of(exported) -> tuple[str, ...]:
    """The program's shape symbols, as a key of MARKERS."""
    names = {str(d) for aval in exported.in_avals for d in aval.shape
             if not isinstance(d, int) and str(d).isidentifier()}  # not expressions such as "O + G"
    for symbols in MARKERS:
        if names == set(symbols):
            return symbols
    raise ModelFileError(f"no PJRT template for a program with shape symbols {sorted(names)}")


def refined_text(exported, *sizes: int, platform: str | None = None) -> str:
    """jax's StableHLO text of the program for fixed sizes (one per symbol, in symbols_of's
    order), shapes refined, no locations. ``refined_text(exported, n, e, "cpu")`` for the model."""
    import jax

    if platform is None and isinstance(sizes[-1], str):
        *sizes, platform = sizes
    try:
        from jax._src.interpreters.mlir import refine_polymorphic_shapes
    except ImportError as e:  # private jax API: say which jax lacks it
        raise ModelFileError(f"jax {jax.__version__} has no shape refinement for PJRT templates ({e}); "
                             "export with --no-pjrt (the Python runtime still works)") from e
    dtype = exported.in_avals[0].dtype
    values = dict(zip(symbols_of(exported), sizes))

    def concrete(d):
        if isinstance(d, int):
            return d
        return int(eval(str(d), {}, dict(values)))  # a dimension expression such as "O + G"

    specs = tuple(jax.ShapeDtypeStruct(tuple(concrete(d) for d in aval.shape), aval.dtype)
                  for aval in exported.in_avals)
    with jax.enable_x64(str(dtype) == "float64"):
        lowered = jax.jit(exported.call).trace(*specs).lower(lowering_platforms=(platform,))
        module = refine_polymorphic_shapes(lowered.compiler_ir("stablehlo"))
    return module.operation.get_asm(enable_debug_info=False)


def fill(template: str, *sizes: int, symbols: tuple[str, ...] = ("N", "E")) -> str:
    """The module of one bucket (what the C++ runtime does, in Python for tests)."""
    values = dict(zip(symbols, sizes))
    text = template
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", str(value))

    def affine(match):
        coefficients = [int(x) for x in match.group(1).split(",")]
        return str(sum(c * v for c, v in zip(coefficients, sizes)) + coefficients[-1])

    return re.sub(r"@@(-?\d+(?:,-?\d+)+)@@", affine, text)


def _slot(values: list[int], symbols: tuple[str, ...] = ("N", "E")) -> str | None:
    """The slot of an integer that takes these values at the symbols' marker sizes (None: not
    affine in the symbols), solved exactly in rationals."""
    from fractions import Fraction

    markers = MARKERS[symbols]
    k = len(symbols) + 1
    rows = [[Fraction(x) for x in (*m, 1)] + [Fraction(v)] for m, v in zip(markers, values)]
    for col in range(k):  # Gauss-Jordan elimination on the k x k system
        pivot = next(r for r in range(col, k) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [x / rows[col][col] for x in rows[col]]
        for r in range(k):
            if r != col and rows[r][col] != 0:
                rows[r] = [a - rows[r][col] * b for a, b in zip(rows[r], rows[col])]
    solution = [row[-1] for row in rows]
    if any(x.denominator != 1 for x in solution):
        return None
    coefficients = [int(x) for x in solution]
    for i, name in enumerate(symbols):
        if coefficients == [int(j == i) for j in range(k - 1)] + [0]:
            return f"@@{name}@@"
    return "@@" + ",".join(str(c) for c in coefficients) + "@@"


def make_template(exported, platform: str) -> str:
    """The program's template for one platform; ModelFileError if it cannot be made exactly."""
    symbols = symbols_of(exported)
    texts = [refined_text(exported, *m, platform=platform) for m in MARKERS[symbols]]
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
        slot = _slot([int(v) for v in values], symbols)
        if slot is None:
            raise ModelFileError(f"a size-dependent integer of the program is not affine in {', '.join(symbols)} "
                                 f"({values}): no PJRT template (export with --no-pjrt)")
        out[i] = slot
    template = "".join(out)
    check = CHECKS[symbols]
    if fill(template, *check, symbols=symbols) != refined_text(exported, *check, platform=platform):
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
