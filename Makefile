# The two commands a newcomer runs (see README): `make demo` and `make test`.
# Each one sets up .venv (and the system packages when run as root) before it runs.
SHELL := /bin/bash
VENV := .venv
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup setup-dev demo test test-all bench clean

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

demo: setup
	@scripts/demo.sh

test: setup-dev
	$(VENV)/bin/pytest -q

test-all: setup-dev
	$(VENV)/bin/pytest -q -m "slow or not slow"

bench: setup-dev
	@for b in bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf runs/ data/ reports/ .pytest_cache
