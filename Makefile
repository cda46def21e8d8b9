# Two commands do everything on a fresh Debian/Ubuntu machine:
#   make build   set up, then build the default cell end to end
#   make test    set up, then run unit + integration + end-to-end tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
CELL        ?= 3.13.5-debian-12-amd64
PROFILE     ?= fast
# SUITE:ARCH pairs of local Debian base images (no registry is reachable here): what the
# default cell needs, and what the tests need (debian-13 for nightly, arm64 under qemu).
BUILD_BASE_IMAGES ?= bookworm:amd64
TEST_BASE_IMAGES  ?= bookworm:amd64 bookworm:arm64 trixie:amd64
PYTEST_ARGS ?=

.PHONY: help setup host venv base-images render build test test-unit lint bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: host venv ## idempotent: Docker engine, buildx, qemu/binfmt, dockerd running, venv + deps

host:
	@bash scripts/setup-host.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

base-images: host ## local Debian base images via debootstrap (all the tests need)
	@bash scripts/make-base-images.sh $(TEST_BASE_IMAGES)

render: venv ## render templates/ into dockerfiles/ (commit the result)
	$(BIN)/orchestrator render

build: setup ## build CELL (default 3.13.5-debian-12-amd64, PROFILE fast) and publish it
	@bash scripts/make-base-images.sh $(BUILD_BASE_IMAGES)
	$(BIN)/orchestrator build $(CELL) --profile $(PROFILE) --publish

test: setup base-images ## every test: unit, integration on the real engine, end to end
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv ## unit tests only (no Docker, no network; seconds)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: venv ## ruff, mypy --strict, and the rendered-Dockerfile check
	$(BIN)/ruff check orchestrator tests scripts
	$(BIN)/ruff format --check orchestrator tests scripts
	$(BIN)/mypy
	$(BIN)/orchestrator render --check

bench: setup base-images ## benchmarks into docs/BENCHMARKS.md (quiet machine; builds release+slim+fast and release 3.13.5t once, ~80 min)
	$(BIN)/python scripts/bench.py all

clean: ## remove outputs and work trees (keeps the source cache and images)
	rm -rf out
