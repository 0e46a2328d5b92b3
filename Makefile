# payout-worker: `make` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the test and lint tools (pyproject's dependency groups, for pips without --group)
TEST_TOOLS := 'pytest>=8' 'pytest-timeout>=2.3' 'pytest-xdist>=3.5' 'hypothesis>=6.100' 'pyyaml>=6' 'ruff>=0.5' 'mypy>=1.10' 'import-linter>=2.1' 'selenium>=4.20' 'django>=5.2'
PYTEST_ARGS ?=
# test processes (pytest-xdist, one file per process at a time): most tests wait on real
# workers, Redis and the sandbox, so 4 fit 2 cores; PYTEST_WORKERS=0 runs in this process
PYTEST_WORKERS ?= 4

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all]' \
	    $(TEST_TOOLS)
	@# wheels of the project's runtime dependencies, for the install tests (a fresh venv
	@# with only the package and what it declares, installed without the index)
	$(PY) -m pip wheel --quiet -c constraints.txt --wheel-dir $(VENV)/wheelhouse '.[all]' 'setuptools>=77' wheel
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install the project with every extra and test tool

.PHONY: test
test: $(STAMP) ## run the whole test suite (unit, store, sandbox, integration, chaos)
	$(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

.PHONY: demo
demo: $(STAMP) ## run the end-to-end demo (embedded Redis, sandbox, worker, beat)
	$(VENV)/bin/payouts demo $(DEMO_ARGS)

.PHONY: bench
bench: $(STAMP) ## run the benchmarks (payouts bench --quick; BENCH_ARGS= for the full run)
	$(VENV)/bin/payouts bench $(or $(BENCH_ARGS),--quick --json bench.json)

.PHONY: soak
soak: $(STAMP) ## long chaos run: SOAK_ORDERS=10000 SOAK_SECONDS=...
	$(PY) -m tests.chaos.run --orders $(or $(SOAK_ORDERS),10000) $(if $(SOAK_SECONDS),--seconds $(SOAK_SECONDS),)

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format), import contracts, mypy
	$(VENV)/bin/ruff check worker tasks sandbox tests
	$(VENV)/bin/ruff format --check worker tasks sandbox tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

.PHONY: clean
clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
