# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   creates .venv, installs gridloop, runs the demo
#   make test   creates .venv, installs gridloop with its test extras, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
EXTRAS ?= test,interop,sweep,postgres,nvml
# Test processes (pytest-xdist); a test file stays in one process, so its module fixtures
# (a lab's runs, a session's recording) are made once.  WORKERS=0 runs them in this one.
WORKERS ?= 2

.PHONY: demo live test test-fast bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Core install (the demo needs nothing else).
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# Everything the tests and benchmarks need.
$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(VENV)/.core $@

demo: $(VENV)/.core
	$(BIN)/gridloop demo

# The demo watched live in a window (needs a display).
live: $(VENV)/.core
	$(BIN)/gridloop demo --view

test: $(VENV)/.full
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.full
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.full
	$(BIN)/python -m benchmarks --out benchmarks/results.json

lint: $(VENV)/.full
	$(BIN)/python -m ruff check bench twin firmware_bridge ledger tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs
