# Two entry points: `make run` starts the hub with the example config and its simulated feed,
# `make test` runs the test suite. Both create .venv with Python 3.11 and install the pinned
# requirements first. `make test` also installs the pinned Node-RED into flows/node_modules when
# node and npm are on PATH; without them the Node-RED tests are skipped. The end-to-end tests
# against a real Home Assistant run once `make ha-install` has installed it; .ci/run installs it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLOWS_STAMP := flows/node_modules/.installed

.PHONY: run test install flows-install ha-install check bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

$(FLOWS_STAMP): flows/package.json flows/package-lock.json
	npm ci --prefix flows --no-audit --no-fund
	touch $(FLOWS_STAMP)

flows-install:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(FLOWS_STAMP); \
	else \
		echo "node or npm not found: Node-RED is not installed and its tests will be skipped"; \
	fi

ha-install:
	bash tests/peers/home_assistant/install.sh

run: $(STAMP)
	$(BIN)/python hub.py run --config config.yaml --ui

check: $(STAMP)
	$(BIN)/python hub.py check --config config.yaml

test: $(STAMP) flows-install
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python tests/bench_hub.py
