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
.PHONY: help update backfill audit report pull publish configure-remote install-s3 test lint format dag status demo bench clean distclean

help: ## List the targets, and where their code lives
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'
	@printf '%s\n' "" "Code (docs/design.md, Architecture):" \
		"  pipeline/ops/       update, backfill, audit, report, pull: one-off params, then dvc repro" \
		"  pipeline/stages/    one module per DVC stage (dvc.yaml): python -m pipeline.stages.NAME" \
		"  pipeline/           the core: config, vision/ (layout, listing, client), prober, planner," \
		"                      dataset/ (schema, store, merge, changes, contract, commit, spans)," \
		"                      atomic, symbols" \
		"  pipeline/query/     vision-query" \
		"  devtools/           emulator, scratch projects, demo (not installed)"

# The pipeline's commands (pipeline/ops): each runs `dvc repro`, the only writer of the data,
# with its one-off params in params.yaml for that run only (put back afterwards, and by the next
# command if a run was killed). AS_OF, LOOKBACK_DAYS, SYMBOLS, SINCE, UNTIL and ALLOW_REMOVALS
# reach them through the environment, never the recipe text. ALLOW_REMOVALS=1 accepts, for that
# run, more files turning unavailable than update.max_removed_* allow; 0 does not; any other
# value is refused (exit 2), not ignored.
OPS := python -m pipeline.ops
RUN_FLAGS = $${AS_OF:+--as-of "$$AS_OF"} $${LOOKBACK_DAYS:+--lookback-days "$$LOOKBACK_DAYS"} \
	$${ALLOW_REMOVALS:+--allow-removals="$$ALLOW_REMOVALS"}
REPAIR_FLAGS = $${SYMBOLS:+--symbols "$$SYMBOLS"} $${SINCE:+--since "$$SINCE"} $${UNTIL:+--until "$$UNTIL"}
export AS_OF LOOKBACK_DAYS SYMBOLS SINCE UNTIL ALLOW_REMOVALS READ_URL WRITE_URL

update: $(RUNTIME) ## Run the pipeline (dvc repro) [AS_OF=DATE] [LOOKBACK_DAYS=N] [ALLOW_REMOVALS=1], after a dvc pull
	$(OPS) update $(RUN_FLAGS)

backfill: $(RUNTIME) ## The same, re-listing SYMBOLS=A,B (whole history) and/or SINCE=DATE [UNTIL=DATE]
	$(OPS) backfill $(RUN_FLAGS) $(REPAIR_FLAGS)

audit: $(RUNTIME) ## The same, re-listing every symbol's whole history; logs what changed
	$(OPS) audit $(RUN_FLAGS)

report: $(RUNTIME) ## Draw the last run's plot data into reports/index.html (offline; dvc plots show works too)
	$(OPS) report --out reports

pull: $(RUNTIME) ## Fetch the dataset recorded in dvc.lock from the DVC remote, after a killed run too
	$(OPS) pull

publish: $(RUNTIME) ## Upload the dataset dvc.lock records (dvc push) to the write remote, else the default
	$(OPS) publish

# READ_URL: the remote consumers read, written to the committed .dvc/config; WRITE_URL: this
# machine's, in .dvc/config.local (docs/publishing.md). Through the environment, as above.
configure-remote: $(RUNTIME) ## Set the DVC remotes: READ_URL=URL (committed) and/or WRITE_URL=URL (this machine)
	$(OPS) configure-remote $${READ_URL:+--read-url "$$READ_URL"} $${WRITE_URL:+--write-url "$$WRITE_URL"}

install-s3: $(RUNTIME) ## Add dvc-s3 (the s3 extra) to .venv, for an S3 DVC remote
	@test ! -e $(DEV) || { echo "error: dvc-s3 conflicts with the test dependencies in $(VENV); use a runtime-only venv: make distclean && make install-s3" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-s3.lock

test: $(DEV) ## Run the test suite, 4 workers (no network: HTTP is mocked or served on 127.0.0.1)
	pytest -n 4 --dist loadfile

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

# KEEP=DIR keeps the scratch project in DIR (a new directory), for make and vision-query there.
export KEEP
demo: $(RUNTIME) ## Run the pipeline offline against the bundled emulator, in a scratch copy [KEEP=DIR]
	python -m devtools.demo $${KEEP:+--keep "$$KEEP"}

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
