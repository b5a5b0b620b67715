# signalgate — developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test lint typecheck unit e2e-coverage bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## start the whole product on embedded defaults (SQLite, data in ./var)
	$(BIN)/signalgate up --data-dir var

test: $(STAMP) lint typecheck  ## every check CI runs: lint, types, unit + integration tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)  ## mypy --strict over src/
	$(BIN)/mypy

bench: $(STAMP)  ## ingest benchmark (prints throughput and latency per backend)
	$(BIN)/python bench/ingest.py

clean:  ## remove the virtualenv, build output and local data
	rm -rf $(VENV) build var .mypy_cache .ruff_cache .pytest_cache
