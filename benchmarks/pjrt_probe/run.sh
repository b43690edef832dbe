#!/usr/bin/env bash
# The Python-free route of issue #12, end to end on one bucket: a Facet model file's
# program as a static-shape StableHLO template, compiled and run by a PJRT CPU plugin
# from C++ (no Python in the process), against jax's own result.
#   bash benchmarks/pjrt_probe/run.sh [MODEL_FILE] [N_PAD] [E_PAD]
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-export/facet-small-si.hlo}; N=${2:-65}; E=${3:-1280}
OUT=benchmarks/out/pjrt_probe; mkdir -p "$OUT/wheels"
.venv/bin/python -m pip download --quiet --no-deps -d "$OUT/wheels" "lammps-jax-pjrt-cpu==0.11.2" "xla-cpu-pjrt==0.0.1"
for w in "$OUT"/wheels/*.whl; do (cd "$OUT" && python3 -m zipfile -e "wheels/$(basename "$w")" unpacked); done
INCLUDE="$OUT/unpacked/xla_plugins/xla_cpu_pjrt/include"
g++ -O1 -std=c++17 -I"$INCLUDE" benchmarks/pjrt_probe/driver.cpp -o "$OUT/driver" -ldl
.venv/bin/python benchmarks/pjrt_probe/make_template.py "$MODEL" "$OUT" "$N" "$E"
for plugin in "$OUT/unpacked/lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so" "$OUT/unpacked/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"; do
  echo "== $(basename "$plugin")"
  "$OUT/driver" "$plugin" "$OUT" "$N" "$E"
done
