# Two entry points: `make run` starts the hub with the example config and its simulated feed,
# `make test` runs the test suite. Both create .venv with Python 3.11 and install the pinned
# requirements first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install check bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python hub.py run --config config.yaml

check: $(STAMP)
	$(BIN)/python hub.py check --config config.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python tests/bench_hub.py
