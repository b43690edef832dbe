"""A Facet model file's program as a static-shape StableHLO template with N and E slots.

    python make_template.py MODEL_FILE OUT_DIR N_PAD E_PAD

jax.export keeps N (atoms) and E (edges) symbolic; PJRT compiles static shapes only, and
XLA does not refine shapes itself (a symbolic module fails with "dynamic_broadcast_in_dim
can't be translated to XLA HLO"). jax's shape refinement, run here for three marker sizes,
gives texts that differ only in integers equal to N or E: each becomes a slot (@@N@@,
@@E@@), so a C++ runtime can write the module of any bucket with no Python. Also writes
the compile options, inputs for one (N_PAD, E_PAD) bucket, and jax's outputs for them.
"""

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir
from jax._src.lib import xla_client

from facet.modelfile import load_model_file

MARKER_SIZES = [(1009, 20011), (1201, 30011), (1409, 40009)]  # no other integer in the module equals these


def refined_text(exported, dtype, n: int, e: int) -> str:
    """The program for N = n atoms and E = e edges, its shapes refined to static ones."""
    specs = (jax.ShapeDtypeStruct((e, 3), dtype), jax.ShapeDtypeStruct((e,), jnp.int32),
             jax.ShapeDtypeStruct((e,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.int32),
             jax.ShapeDtypeStruct((n,), dtype))
    module = mlir.refine_polymorphic_shapes(jax.jit(exported.call).lower(*specs).compiler_ir("stablehlo"))
    return module.operation.get_asm(enable_debug_info=False)


def template(exported, dtype) -> str:
    parts = [re.split(r"(\d+)", refined_text(exported, dtype, n, e)) for n, e in MARKER_SIZES]
    if any(len(p) != len(parts[0]) for p in parts):
        raise SystemExit("the module's structure depends on N or E: no template")
    out = list(parts[0])
    for i in range(1, len(out), 2):
        values = [int(p[i]) for p in parts]
        if len(set(values)) == 1:
            continue
        if values == [n for n, _ in MARKER_SIZES]:
            out[i] = "@@N@@"
        elif values == [e for _, e in MARKER_SIZES]:
            out[i] = "@@E@@"
        else:
            raise SystemExit(f"integer slot {i} is neither N nor E across the marker sizes: {values}")
    return "".join(out)


def main():
    model_file, out, n, e = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    header, exported = load_model_file(model_file)
    dtype = jnp.dtype(header["dtype"])
    text = template(exported, dtype)
    if text.replace("@@N@@", str(n)).replace("@@E@@", str(e)) != refined_text(exported, dtype, n, e):
        raise SystemExit(f"the template written for ({n}, {e}) differs from jax's lowering there")
    with open(f"{out}/template.mlir", "w") as f:
        f.write(text)
    with open(f"{out}/options.pb", "wb") as f:
        f.write(xla_client.CompileOptions().SerializeAsString())
    rng = np.random.default_rng(0)
    inputs = {"v": (rng.normal(size=(e, 3)) * 1.5).astype(dtype), "s": rng.integers(0, n - 1, e).astype(np.int32),
              "r": rng.integers(0, n - 1, e).astype(np.int32), "sp": np.zeros(n, np.int32),
              "m": np.r_[np.ones(n - 1), 0].astype(dtype)}
    for name, array in inputs.items():
        array.tofile(f"{out}/{name}.bin")
    atom_energies, gradients = exported.call(*inputs.values())
    np.asarray(atom_energies).tofile(f"{out}/ref_ae.bin")
    np.asarray(gradients).tofile(f"{out}/ref_g.bin")
    print(f"template: {len(text):,} characters, {text.count('@@N@@')} N slots, {text.count('@@E@@')} E slots; "
          f"matches jax's lowering at ({n}, {e})")


if __name__ == "__main__":
    main()
