# Countersign — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./countersign-data
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The embedded default runs in development mode (keys not passphrase-protected)
# unless you set COUNTERSIGN_ENV=production and COUNTERSIGN_KEY_PASSPHRASE.
export COUNTERSIGN_ENV ?= development

.PHONY: help install install-dev up demo test lint typecheck pytest pytest-pg pytest-both bench soak clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo
	@echo "Variables (e.g. make up HOST=0.0.0.0 PORT=8080 DATA=/srv/countersign):"
	@echo "  HOST=$(HOST)   address 'make up' serves on"
	@echo "  PORT=$(PORT)   port 'make up' serves on ('make demo' uses 8765 unless PORT is set)"
	@echo "  DATA=$(DATA)   the service's data directory: database, blob store, key files"
	@echo "  VENV=$(VENV)   the virtualenv (commands end up in $(BIN)/; add it to PATH to run 'countersign')"
	@echo "  PYTHON=$(PYTHON)   the interpreter the virtualenv is made from"

# Each machine installs only its own part. A server: libsndfile and .[server,client] (the API,
# the retention job and the admin/officer CLI). Development and CI: every extra plus the test
# tools, and the audio stack the real-audio tests and the demo drive. Stamps in the virtualenv
# say which was installed; installing the dev shape satisfies the server's too.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	./scripts/install-system-deps.sh server
	$(BIN)/pip install -q -e '.[server,client]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	./scripts/install-system-deps.sh dev
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed-server

install: $(VENV)/.installed-server ## Install what a server needs: libsndfile1, the report font + a virtualenv with .[server,client]

install-dev: $(VENV)/.installed-dev ## Install everything for development and tests: all Debian packages + .[dev]

up: install ## Set up and start the service on embedded defaults (SQLite + files in DATA, on HOST:PORT)
	@test -d $(DATA)/keys || $(BIN)/countersign server init --data $(DATA)
	$(BIN)/countersign server run --data $(DATA) --host $(HOST) --port $(PORT)

demo: install-dev ## Run the whole evidence loop once and show each step
	PATH="$(CURDIR)/$(BIN):$$PATH" ./scripts/demo.sh

lint: install-dev ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev ## mypy (strict on the application packages)
	$(BIN)/mypy .

pytest: install-dev ## Run the test suite only (SQLite + filesystem store)
	$(BIN)/pytest -q -p no:cacheprovider

pytest-pg: install-dev ## Run the test suite on PostgreSQL + S3 (moto; starts the local cluster if needed)
	./scripts/ensure-postgres.sh
	COUNTERSIGN_TEST_BACKEND=postgres-s3 $(BIN)/pytest -q -p no:cacheprovider

pytest-both: install-dev ## Run both passes side by side, each line labelled (scripts/test-both.sh)
	./scripts/ensure-postgres.sh
	VENV=$(VENV) ./scripts/test-both.sh

test: lint typecheck pytest-both ## Set up and pass lint, types and tests on both backends, side by side (what CI runs)

bench: install-dev ## Run the benchmarks (figures, not tests)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.recorder_cpu
	$(BIN)/python -m bench.retention_sweep
	$(BIN)/python -m bench.audit_proof
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.alerts
	$(BIN)/python -m bench.kiosk
	$(BIN)/python -m bench.console_search
	$(BIN)/python -m bench.console_audio

soak: install-dev ## Soak: 500 devices recording for 10 minutes against one service (~13 min; figures, not a test)
	$(BIN)/python -m bench.soak

clean: ## Remove the virtualenv and caches (never touches DATA)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
