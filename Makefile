# The two commands: `make repro` (set up, then run the whole pipeline) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: setup repro test test-fast plots bench clean-venv

setup:
	@bash scripts/setup.sh

repro: setup
	dvc repro

test: setup
	python -m pytest

test-fast: setup
	python -m pytest -m "not e2e and not browser"

plots: setup
	dvc plots show --open || dvc plots show

bench: setup
	python -m benchmarks.bench
