# signalgate — developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test lint typecheck unit e2e-coverage bench clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## start the whole product on embedded defaults (SQLite, data in ./var)
	$(BIN)/signalgate up --data-dir var

test: $(STAMP) lint typecheck  ## every check CI runs: lint, types, unit + integration + e2e tests
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory e2e-coverage

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests bench deploy e2e
	$(BIN)/ruff format --check src tests bench deploy e2e

typecheck: $(STAMP)  ## mypy --strict over src/ and the deploy tooling
	$(BIN)/mypy
	$(BIN)/mypy --strict deploy/kind/up.py

# The venv's bin goes first on PATH so the stack's console scripts and `python3` are the venv's.
# Per-run state from earlier runs is removed first; e2ecov empties its own reports and data.
e2e-coverage: $(STAMP)  ## end-to-end tests on the real stack (e2e/stack.toml) with coverage
	@rm -rf build/e2e/state
	@PATH="$(abspath $(BIN)):$$PATH" $(BIN)/e2ecov run -c e2e/stack.toml; code=$$?; \
	  $(BIN)/python e2e/summary.py build/e2e; exit $$code

bench: $(STAMP)  ## ingest benchmark (prints throughput and latency per backend)
	$(BIN)/python bench/ingest.py

clean:  ## remove the virtualenv, build output and local data
	rm -rf $(VENV) build var .mypy_cache .ruff_cache .pytest_cache
