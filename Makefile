# Set-up and everyday commands. Everything lives in .venv/ inside the repository.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facet-installed

.PHONY: install demo active-demo lint test test-slow test-all peer-envs test-peers bench bench-peers clean

# Create the venv and install Facet (building the LAMMPS plugin) with its test tools.
$(STAMP): pyproject.toml CMakeLists.txt $(wildcard cpp/*) $(wildcard cpp/runtime/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Train a small Facet model on the bundled data, export it, run ASE and LAMMPS MD with it.
demo: $(STAMP)
	$(PY) examples/demo.py --out demo

# Active learning in minutes: a 4-member committee learns hot SiO2, the Vashishta potential
# labelling what it is unsure of (examples/active/; report in active-demo/active/report.md).
active-demo: $(STAMP)
	$(PY) examples/active/demo.py --out active-demo

# The linter (configured in pyproject.toml), then the default suite (slow tests are
# marked and run with `make test-slow`).
lint: $(STAMP)
	$(PY) -m ruff check python tests benchmarks examples

test: lint
	$(PY) -m pytest -q -m "not slow" --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q

# Tests that need torch and the peer packages (the SevenNet-0 port against sevenn), in
# their own environments (.venv-peers, .venv-mace) so the main one stays torch-free.
peer-envs: $(STAMP)
	bash benchmarks/peers/setup_envs.sh

test-peers: peer-envs
	.venv-peers/bin/python -m pytest -q tests/peers

# Benchmarks, run on demand; reports (Markdown, JSON, PNG) go to benchmarks/out/.
bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py --out benchmarks/out
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/lammps_step.py

# Facet against SevenNet-0, CHGNet, MACE and Nequix: trains, times and writes
# benchmarks/RESULTS.md (about 3 hours on 2 cores; see benchmarks/run.py).
bench-peers: $(STAMP)
	$(PY) benchmarks/run.py --all

clean:
	rm -rf $(VENV) build _skbuild demo .pytest_cache
