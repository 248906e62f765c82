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

.PHONY: help install up demo test lint typecheck pytest pytest-pg bench clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/countersign: pyproject.toml
	./scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/countersign ## Install Debian packages and a virtualenv with Countersign

up: install ## Set up and start the service on embedded defaults (SQLite + files in DATA)
	@test -d $(DATA)/keys || $(BIN)/countersign server init --data $(DATA)
	$(BIN)/countersign server run --data $(DATA) --host $(HOST) --port $(PORT)

demo: install ## Run the whole evidence loop once and show each step
	PATH="$(CURDIR)/$(BIN):$$PATH" ./scripts/demo.sh

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy (strict on the application packages)
	$(BIN)/mypy .

pytest: install ## Run the test suite only (SQLite + filesystem store)
	$(BIN)/pytest -q -p no:cacheprovider

pytest-pg: install ## Run the test suite on PostgreSQL + S3 (moto; starts the local cluster if needed)
	./scripts/ensure-postgres.sh
	COUNTERSIGN_TEST_BACKEND=postgres-s3 $(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck pytest pytest-pg ## Set up and pass lint, types and tests on both backends (what CI runs)

bench: install ## Run the benchmarks (figures, not tests)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.recorder_cpu
	$(BIN)/python -m bench.retention_sweep

clean: ## Remove the virtualenv and caches (never touches DATA)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
