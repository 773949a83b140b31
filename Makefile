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

# The whole suite, browser and PostgreSQL tests included: set-up also installs Debian's chromium and
# postgresql where apt exists (`make test WITH_BROWSER=0 WITH_POSTGRES=0` leaves them out; those
# tests then skip and say so).
test:
	@WITH_BROWSER=$(or $(WITH_BROWSER),1) WITH_POSTGRES=$(or $(WITH_POSTGRES),1) bash scripts/setup.sh
	python -m pytest

test-fast: setup
	python -m pytest -m "not e2e and not browser"

plots: setup
	dvc plots show --open || dvc plots show

bench: setup
	python -m benchmarks.bench
