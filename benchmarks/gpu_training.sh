#!/usr/bin/env bash
# Steady-state training throughput of Facet and Nequix on one GPU, both in JAX, on the
# Si split (at most 10 minutes). Run from the repository root on a machine with an
# NVIDIA GPU and a CUDA-enabled jax:
#
#     bash benchmarks/gpu_training.sh [OUT_DIR]
#
# 1. Facet: benchmarks/profile_training.py with the Si benchmark config (the default
#    recipe), all threads, on the GPU: compile time, step time, structures/s, FLOP/s.
#    The same at the peers' width (90k parameters, benchmarks/run.py's NARROW).
# 2. Nequix: its own trainer (benchmarks/peers/train_peer.py nequix) for 2 minutes,
#    when the nequix package and its imports (equinox, jraph, matscipy) are present;
#    its structures/s over the run and per logging window come from its result.json.
# Writes OUT_DIR/gpu_training.md and the raw JSON beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"

$PY - <<'EOF' || { echo "no GPU visible to jax: nothing to measure" | tee "$OUT/gpu_training.md"; exit 1; }
import jax
assert jax.default_backend() == "gpu", jax.devices()
print("jax", jax.__version__, jax.devices())
EOF
$PY -m pip install --quiet --no-deps pyxtal_ff==0.2.3 2>/dev/null || true
$PY benchmarks/si_data.py || exit 1

echo "== Facet (Si benchmark config) on the GPU"
timeout 240 $PY benchmarks/profile_training.py --threads 0 --steps 200 \
    --data benchmarks/out/si/train.extxyz --out "$OUT/facet.json" | tee "$OUT/facet.md"
echo "== Facet at the peers' width on the GPU"
NARROW_SET=$(cd benchmarks && $PY -c "import run; print(' '.join('--set ' + o for o in run.NARROW))")
# shellcheck disable=SC2086  # NARROW_SET is a list of words
timeout 120 $PY benchmarks/profile_training.py --threads 0 --steps 200 $NARROW_SET \
    --data benchmarks/out/si/train.extxyz --out "$OUT/facet-narrow.json" | tee "$OUT/facet-narrow.md"

echo "== Nequix (its own trainer, 2 minutes) on the GPU"
if $PY -c "import nequix, equinox, jraph, matscipy" 2>/dev/null; then
  JAX_PLATFORMS=cuda timeout 200 $PY benchmarks/peers/train_peer.py nequix --minutes 2 --threads 16 \
      --out "$OUT/nequix" > "$OUT/nequix.log" 2>&1
  # structures/s over the run: epochs x training structures / budget (compilation included)
  NEQUIX=$($PY -c "import json; r = json.load(open('$OUT/nequix/result.json')); print(round(r['epochs'] * 5126 / r['budget_s'], 1))" 2>/dev/null || echo "failed: see $OUT/nequix.log")
else
  NEQUIX="not measured: nequix (with equinox, jraph, matscipy) is not installed in this python"
fi
FACET=$($PY -c "import json; print(round(json.load(open('$OUT/facet.json'))['structures_per_s'], 1))" 2>/dev/null)
NARROW=$($PY -c "import json; print(round(json.load(open('$OUT/facet-narrow.json'))['structures_per_s'], 1))" 2>/dev/null)
{
  echo "# Training throughput on one GPU (Si split)"
  echo
  echo "| model | structures/s |"
  echo "|---|---|"
  echo "| Facet (steady state, benchmarks/profile_training.py) | ${FACET:-failed} |"
  echo "| Facet at the peers' width (90k parameters), steady state | ${NARROW:-failed} |"
  echo "| Nequix (its trainer: epochs x 5,126 structures / 2-minute budget, compilation included) | ${NEQUIX} |"
  echo
  cat "$OUT/facet.md" "$OUT/facet-narrow.md"
} > "$OUT/gpu_training.md"
cat "$OUT/gpu_training.md"
