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
.PHONY: help update pull publish install-s3 report backfill audit test lint format dag status demo bench clean distclean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

update: $(RUNTIME) ## Run the pipeline (dvc repro), restoring recorded data from the DVC remote first
	@if [ -n "$$(dvc remote list)" ]; then $(MAKE) --no-print-directory pull; fi
	$(call with_params_of_this_run,dvc repro)

pull: $(RUNTIME) ## Fetch the dataset recorded in dvc.lock from the DVC remote
	dvc pull --allow-missing

publish: $(RUNTIME) ## Upload the dataset recorded in dvc.lock to the DVC remote (dvc push)
	dvc push

install-s3: $(RUNTIME) ## Add dvc-s3 (the s3 extra) to .venv, for an S3 DVC remote
	@if [ -e $(DEV) ]; then echo "error: dvc-s3 conflicts with the boto3 of the test dependencies" \
		"in $(VENV); use a runtime-only venv: make distclean && make install-s3" >&2; exit 1; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements-s3.lock

# Where `make report` writes its page (gitignored); each run replaces it.
REPORT_DIR ?= reports/plots

report: $(RUNTIME) ## Draw the plots of the last run (dvc plots show) into reports/plots/index.html
	@plots=$$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["paths"]["plots"])') \
		&& ls "$$plots"/*.csv >/dev/null 2>&1 \
		|| { echo "error: no plot data in $$plots: run the pipeline first (make update)" >&2; exit 1; }
	@mkdir -p $(REPORT_DIR)  # dvc plots show creates the last folder only
	dvc plots show --out $(REPORT_DIR)

# Operator repairs (pipeline/repair.py). Each merges what it finds into the dataset, logs every
# change to data/changes.parquet, records the outputs in dvc.lock (dvc commit update), then
# validate and report run again on the repaired data. SYMBOLS, SINCE and UNTIL reach the
# command through the environment (make exports command-line variables), never the recipe text.
backfill: $(RUNTIME) ## Re-list SYMBOLS=A,B (whole history) and/or SINCE=DATE [UNTIL=DATE]
	@[ -n "$${SYMBOLS:-}$${SINCE:-}" ] \
		|| { echo "error: give SYMBOLS=A,B and/or SINCE=YYYY-MM-DD [UNTIL=YYYY-MM-DD]" >&2; exit 2; }
	$(call with_params_of_this_run,python -m pipeline.backfill $${SYMBOLS:+--symbols "$$SYMBOLS"} \
		$${SINCE:+--since "$$SINCE"} $${UNTIL:+--until "$$UNTIL"} && $(VALIDATE_AND_REPORT))

audit: $(RUNTIME) ## Re-list every symbol's whole history; log files re-uploaded, removed or late
	$(call with_params_of_this_run,python -m pipeline.audit && $(VALIDATE_AND_REPORT))

# The repairs run with the same one-off AS_OF and LOOKBACK_DAYS as `make update` would.
VALIDATE_AND_REPORT = dvc repro --single-item validate report
with_params_of_this_run = $(if $(AS_OF)$(LOOKBACK_DAYS),$(call with_overridden_params,$(1)),$(1))

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

# One-off overrides of a run's date and lookback: `make update AS_OF=2024-06-01 LOOKBACK_DAYS=40`.
# params.yaml holds them for that run only: dvc.lock records the values used, and params.yaml is
# put back byte for byte afterwards, even when the run fails.
AS_OF ?=
LOOKBACK_DAYS ?=
export AS_OF LOOKBACK_DAYS
define OVERRIDE_PARAMS_PY
import os
from pathlib import Path

import yaml

path = Path("params.yaml")
params = yaml.safe_load(path.read_text(encoding="utf-8"))
if os.environ["AS_OF"]:
    params["run"]["as_of"] = os.environ["AS_OF"]
lookback = os.environ["LOOKBACK_DAYS"]
if lookback:
    # Anything but digits is left as text for the stages' own check to reject, naming the key.
    params["update"]["lookback_days"] = int(lookback) if lookback.isdigit() else lookback
path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
print("for this run:", f"run.as_of={params['run']['as_of']}",
      f"update.lookback_days={params['update']['lookback_days']}")
endef
export OVERRIDE_PARAMS_PY
with_overridden_params = saved=$$(mktemp) && cp params.yaml "$$saved" \
	&& trap 'cp "$$saved" params.yaml && rm -f "$$saved"' EXIT && trap 'exit 130' INT TERM \
	&& python -c "$$OVERRIDE_PARAMS_PY" && $(1)

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: $(PYTHON) is older than 3.11; set PYTHON=python3.11 (or newer)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@touch $@

# The locked dependencies, then the project itself, editable, so that its console script
# (vision-query) is on .venv/bin; offline: the lock's setuptools builds it (no build isolation)
# and the lock holds its dependencies. $(wildcard): the tests' scratch copies of this Makefile
# come without pyproject.toml.
$(RUNTIME): requirements.lock $(wildcard pyproject.toml) $(VENV)/.python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
	@touch $@

$(DEV): requirements-dev.lock $(RUNTIME)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	@touch $@
