#!/usr/bin/env bash
# Create the two environments the peer benchmarks run in (never the project's .venv):
#   .venv-peers : torch (CPU) + sevenn + chgnet + nequix (JAX) + facet itself, for
#                 zero-shot peers, SevenNet/Nequix training and the SevenNet-0 port tests;
#   .venv-mace  : torch (CPU) + mace-torch, which pins e3nn==0.4.4 and so cannot share
#                 an environment with sevenn (e3nn>=0.5).
# torch is pinned to 2.13.0: that exact version is the CPU build; any other spec pulls a
# multi-GB CUDA build. Idempotent: an environment with its stamp file is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH="torch==2.13.0"

make_env() {  # make_env DIR
  test -x "$1/bin/python" || "$PYTHON" -m venv "$1"
  "$1/bin/python" -m pip install --quiet --upgrade pip
}

if [ ! -f .venv-peers/.ready ]; then
  make_env .venv-peers
  P=.venv-peers/bin/python
  $P -m pip install --quiet "$TORCH"
  $P -m pip install --quiet "$TORCH" "sevenn==0.13.0" "chgnet==0.4.2"
  # The project (pins jax 0.10.1 and e3nn-jax); the plugin build is not needed here.
  $P -m pip install --quiet "$TORCH" -e ".[test]"
  # nequix pins jax[cuda12] and wandb: install it without dependencies, plus what it imports.
  $P -m pip install --quiet --no-deps "nequix==0.4.5"
  $P -m pip install --quiet "$TORCH" equinox jraph cloudpickle h5py matscipy pyyaml ase-db-backends
  # pyxtal_ff ships the Si DFT set; its own dependencies are not needed to read it.
  $P -m pip install --quiet --no-deps "pyxtal_ff==0.2.3"
  touch .venv-peers/.ready
fi

if [ ! -f .venv-mace/.ready ]; then
  make_env .venv-mace
  M=.venv-mace/bin/python
  $M -m pip install --quiet "$TORCH"
  $M -m pip install --quiet "$TORCH" "mace-torch==0.3.16"
  touch .venv-mace/.ready
fi
echo "peer environments ready: .venv-peers .venv-mace"
