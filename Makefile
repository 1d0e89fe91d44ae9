# CodeGen-MCP — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8765
PYTEST_ARGS ?=
# `make test` fails when coverage of src/ (lines and branches) falls under this percent: 3 points under the 90.5 %
# measured at fa50af5 without the `node` tests, so a full run's small swings pass. Raise it as coverage grows.
COV_FAIL_UNDER ?= 87
KIND_CLUSTER ?= codegen-mcp
IMAGE_TAG ?= dev

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Create .venv and install the project with its runtime extras (idempotent)

install-dev: $(VENV)/.installed-dev ## Also install the test and lint tools

run: install ## Install, then serve MCP on http://127.0.0.1:8765/mcp and /sse (local backend; HOST=, PORT= to change)
	$(BIN)/codegen-mcp serve --backend local --host $(HOST) --port $(PORT)

test: install-dev conformance-install ## Install, then run every test that can run on this machine; print and gate coverage
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=$(COV_FAIL_UNDER) $(PYTEST_ARGS)

tests/conformance/node_modules/.package-lock.json: tests/conformance/package.json tests/conformance/package-lock.json
	bash tests/conformance/install.sh

conformance-install: tests/conformance/node_modules/.package-lock.json ## Install the pinned MCP conformance suite (npm ci)

conformance: install-dev conformance-install ## Run the official MCP conformance suite against the coordinator
	$(BIN)/pytest -m conformance tests/conformance $(PYTEST_ARGS)

lint: install-dev ## ruff, ruff format --check, mypy --strict, import-linter
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install-dev ## Format and autofix
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

crd: install ## Regenerate crds/codegensession.yaml and crds/codegensandboxpool.yaml from the models (and the chart's copies)
	$(BIN)/codegen-mcp crd -o crds/codegensession.yaml
	$(BIN)/codegen-mcp crd --pool -o crds/codegensandboxpool.yaml
	$(MAKE) chart-crds

test-operator: install-dev ## Operator tests: real kopf against the API emulator and the kubelet harness
	$(BIN)/pytest tests/unit/operator tests/integration/operator $(PYTEST_ARGS)

bench: install ## Print round-trip figures (coordinator vs a bare MCP server)
	$(BIN)/python bench/roundtrip.py

bench-sessions: install ## New sessions: first call with the warm pool and without, 10/50 at once, idle memory (vs a bare MCP server)
	$(BIN)/python bench/sessions.py

bench-streams: install-dev ## Resumable streams: an echo call's cost with the memory and Redis event stores (vs a bare MCP server)
	$(BIN)/python bench/streams.py

bench-audit: install-dev ## Audit sinks: an echo call's cost with the file, stdout and PostgreSQL sinks (vs the file sink)
	$(BIN)/python bench/audit.py

bench-security: install-dev ## As root: attack a local coordinator (paths, races, bombs, quotas, floods) and print the figures
	$(BIN)/python bench/security.py

bench-cluster: install-dev ## Real control plane: its start time; session create → Ready → first call (KUBEBUILDER_ASSETS)
	$(BIN)/python bench/control_plane.py

bench-pool: install-dev ## Real control plane: pooled claim → Ready p50/p95; first call with and without a warm pool (KUBEBUILDER_ASSETS)
	$(BIN)/python bench/pool.py

bench-live-output: install ## Live output: print in the sandbox → MCP notification at the client, p50/p95 (vs a bare SDK echo)
	$(BIN)/python bench/live_output.py

bench-contexts: install ## Python contexts: a cell in a persistent context vs a stateless run.python (median, min, first cell)
	$(BIN)/python bench/contexts.py

.PHONY: help install install-dev run test lint fmt bench bench-sessions bench-streams bench-audit bench-security bench-cluster bench-pool bench-live-output bench-contexts conformance-install conformance crd test-operator

include mk/cluster.mk
include mk/node.mk
