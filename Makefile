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

# The whole suite, browser tests included: set-up also installs Debian's chromium where apt
# exists (`make test WITH_BROWSER=0` leaves it out; the browser tests then skip and say so).
test:
	@WITH_BROWSER=$(or $(WITH_BROWSER),1) bash scripts/setup.sh
	python -m pytest

test-fast: setup
	python -m pytest -m "not e2e and not browser"

plots: setup
	dvc plots show --open || dvc plots show

bench: setup
	python -m benchmarks.bench
