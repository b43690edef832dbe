#!/usr/bin/env bash
# pair_style facet on a GPU through the PJRT runtime (issue #12), at most 10 minutes.
# Run from the repository root, after `make install`, on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu_lammps.sh [OUT_DIR]
#
# 1. Installs the CUDA PJRT plugin matching our jax (jax-cuda12-pjrt and the nvidia
#    wheels it needs, through "jax[cuda12]"), unless FACET_PJRT_PLUGIN names one.
# 2. Exports Facet-Small (random weights, the Si model's cutoff) for cpu and cuda in one
#    file, float64 and float32.
# 3. LAMMPS `run 0` on a rattled Si cell with `device cpu` and `device cuda`: energies,
#    forces and virial must agree (float64: 1e-9 relative; float32: 1e-4).
# 4. Time per MD step (NVE, 20 steps after 5 warm-up steps) with `device cuda` from 512 to
#    32,768 atoms, and with `device cpu` up to 4,096 atoms for comparison.
# Writes OUT_DIR/gpu_lammps.md and gpu_lammps.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/out/gpu_lammps}
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
if [ -z "${FACET_PJRT_PLUGIN:-}" ]; then
  JAX_VERSION=$($PY -c "import jax; print(jax.__version__)")
  timeout 240 $PY -m pip install --quiet "jax[cuda12]==$JAX_VERSION" || echo "could not install jax[cuda12]==$JAX_VERSION"
fi
for dtype in float64 float32; do
  timeout 120 $PY benchmarks/facet_random_model.py --elements Si --cutoff 5.0 --dtype $dtype \
      --platforms cpu,cuda -o "$OUT/facet-small-$dtype.hlo" > "$OUT/export-$dtype.log" 2>&1 || exit 1
done
timeout 420 $PY - "$OUT" <<'PYEOF'
import json, sys, time
from pathlib import Path
import numpy as np
from ase.build import bulk
from facet._lammps import new_lammps
from facet import _pjrt

out = Path(sys.argv[1])
report = {"cuda_plugin": _pjrt.default_plugin("cuda"), "agreement": {}, "step_ms": {}}

def lammps(model, atoms, device, commands):
    lmp = new_lammps()
    data = out / f"si{len(atoms)}.data"
    if not data.exists():
        from ase.io import write
        write(data, atoms, format="lammps-data", masses=True)
    lmp.commands_string(f"units metal\natom_style atomic\natom_modify map yes\nread_data {data}\n"
                        f"pair_style facet {model} device {device}\npair_coeff * * Si\n"
                        f"compute pv all pressure NULL virial\nthermo_style custom step pe c_pv[1] c_pv[2] c_pv[3]\n"
                        + commands)
    return lmp

atoms = bulk("Si", "diamond", a=5.43, cubic=True) * 4
atoms.rattle(0.05, seed=0)
for dtype, tol in (("float64", 1e-9), ("float32", 1e-4)):
    model = out / f"facet-small-{dtype}.hlo"
    res = {}
    for device in ("cpu", "cuda"):
        try:
            lmp = lammps(model, atoms, device, "run 0")
        except Exception as e:
            res[device] = str(e)
            continue
        n = lmp.get_natoms()
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        f = np.array(lmp.numpy.extract_atom("f")[:n])[np.argsort(ids)]
        res[device] = {"pe": lmp.get_thermo("pe"), "forces": f,
                       "virial": [lmp.get_thermo(f"c_pv[{k}]") for k in (1, 2, 3)]}
        lmp.close()
    if all(isinstance(res.get(d), dict) for d in ("cpu", "cuda")):
        a, b = res["cpu"], res["cuda"]
        rel_f = float(np.abs(a["forces"] - b["forces"]).max() / np.abs(a["forces"]).max())
        rel_e = abs(a["pe"] - b["pe"]) / abs(a["pe"])
        rel_v = float(np.max(np.abs(np.subtract(a["virial"], b["virial"])) / np.maximum(np.abs(a["virial"]), 1e-12)))
        report["agreement"][dtype] = {"energy": rel_e, "forces": rel_f, "virial": rel_v,
                                      "ok": max(rel_e, rel_f, rel_v) <= tol, "tolerance": tol}
    else:
        report["agreement"][dtype] = {k: v for k, v in res.items() if isinstance(v, str)}
print(json.dumps(report["agreement"], indent=1))

for device, reps in (("cuda", (2, 4, 5, 6, 8)), ("cpu", (2, 3, 4))):
    for rep in reps:  # 8 atoms per cubic cell: 512 ... 32,768 atoms
        big = bulk("Si", "diamond", a=5.43, cubic=True) * rep
        big.rattle(0.02, seed=1)
        try:
            lmp = lammps(out / "facet-small-float32.hlo", big, device,
                         "velocity all create 300 1\nfix 1 all nve\ntimestep 0.001\nthermo 0\nrun 5\n")
            t = time.perf_counter()
            lmp.command("run 20 pre no post no")
            report["step_ms"].setdefault(device, {})[len(big)] = 1e3 * (time.perf_counter() - t) / 20
            lmp.close()
        except Exception as e:
            report["step_ms"].setdefault(device, {})[len(big)] = f"failed: {e}"
        print(device, len(big), report["step_ms"][device][len(big)], flush=True)

(out / "gpu_lammps.json").write_text(json.dumps(report, indent=1, default=str))
lines = ["# pair_style facet on the GPU (PJRT runtime)", "", f"CUDA plugin: `{report['cuda_plugin']}`", "",
         "| dtype | energy | forces | virial | within tolerance |", "|---|---|---|---|---|"]
for dtype, a in report["agreement"].items():
    if "ok" in a:
        lines.append(f"| {dtype} | {a['energy']:.1e} | {a['forces']:.1e} | {a['virial']:.1e} | {a['ok']} (≤ {a['tolerance']:.0e}) |")
    else:
        lines.append(f"| {dtype} | {a} | | | |")
lines += ["", "| atoms | " + " | ".join(report["step_ms"]) + " |", "|---|" + "---|" * len(report["step_ms"])]
for n in sorted({n for d in report["step_ms"].values() for n in d}):
    cells = [report["step_ms"][d].get(n, "–") for d in report["step_ms"]]
    lines.append(f"| {n} | " + " | ".join(f"{c:.2f} ms" if isinstance(c, float) else str(c) for c in cells) + " |")
(out / "gpu_lammps.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
