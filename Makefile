# vision-availability: `make update` runs the pipeline, `make test` runs the tests.
# Both bootstrap .venv from the hash-pinned lock files; only python3 >= 3.11 and make are needed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONUTF8 := 1

.DEFAULT_GOAL := help
.PHONY: help update pull test lint format dag status demo bench clean distclean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

update: $(RUNTIME) ## Run the pipeline (dvc repro), restoring recorded data from the DVC remote first
	@if [ -n "$$(dvc remote list)" ]; then $(MAKE) --no-print-directory pull; fi
	dvc repro

pull: $(RUNTIME) ## Fetch the dataset recorded in dvc.lock from the DVC remote
	dvc pull --allow-missing

test: $(DEV) ## Run the test suite (no network: HTTP is mocked or served on 127.0.0.1)
	pytest

lint: $(DEV) ## ruff check and format check
	ruff check .
	ruff format --check .

format: $(DEV) ## Apply ruff's fixes and formatting
	ruff check --fix .
	ruff format .

dag: $(RUNTIME) ## Show how the stages depend on each other
	dvc dag

status: $(RUNTIME) ## What dvc repro would rerun, and why
	dvc status

demo: $(RUNTIME) ## Run the pipeline offline against the bundled emulator, in a scratch copy
	python -m pipeline.demo

bench: $(RUNTIME) ## Benchmark at real scale on the emulator (50 ms latency); writes bench/results.json
	python bench/pipeline_bench.py

clean: ## Remove caches and logs (keeps the dataset and .venv)
	rm -rf .pytest_cache .ruff_cache logs
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

distclean: clean ## Also remove .venv
	rm -rf $(VENV)

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: $(PYTHON) is older than 3.11; set PYTHON=python3.11 (or newer)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@touch $@

$(RUNTIME): requirements.lock $(VENV)/.python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	@touch $@

$(DEV): requirements-dev.lock $(RUNTIME)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	@touch $@
