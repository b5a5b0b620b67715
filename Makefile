# signalgate — developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Extra interpreters the tests use besides the venv's own: e2ecov's core tests want a Python
# 3.12+ (pyenv's, or python3.12/python3.13 on PATH). Each that runs gets a throwaway venv with
# coverage.py under $(PYTHONS_DIR) (make test-pythons), so the interpreter itself is never
# modified and `make test` needs nothing installed by hand. Override EXTRA_PYTHONS to choose.
PYTHONS_DIR   ?= build/pythons
EXTRA_PYTHONS ?= $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python) \
                 $(shell for n in python3.13 python3.12; do command -v $$n; done 2>/dev/null)
COVERAGE_REQ  := coverage>=7.14

.PHONY: help run test test-pythons kube-testenv lint typecheck unit e2e-coverage bench clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## start the whole product on embedded defaults (SQLite, data in ./var); ARGS=... for more
	$(BIN)/signalgate up --data-dir var $(ARGS)

test: $(STAMP) lint typecheck test-pythons kube-testenv  ## every check CI runs: lint, types, unit + integration + e2e tests
	SIGNALGATE_TEST_PYTHONS="$(abspath $(PYTHONS_DIR))" $(BIN)/python -m pytest -q -rs
	$(MAKE) --no-print-directory e2e-coverage

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests bench deploy e2e
	$(BIN)/ruff format --check src tests bench deploy e2e

typecheck: $(STAMP)  ## mypy --strict over src/, the tests, bench/, e2e/ and the deploy tooling
	$(BIN)/mypy
	$(BIN)/mypy --strict deploy/kind/up.py

# The venv's bin goes first on PATH so the stack's console scripts and `python3` are the venv's.
# Per-run state from earlier runs is removed first; e2ecov empties its own reports and data.
# Alertmanager is built with -cover from its Go module (cached outside the work tree after the
# first build) and measured beside the Gateway and DataStorage; the Kubernetes tier runs on the
# kube-apiserver and etcd of tools/kube-testenv (cached likewise).
e2e-coverage: $(STAMP)  ## end-to-end tests on the real stack (e2e/stack.toml) with coverage
	@rm -rf build/e2e/state
	@am=$$(e2e/build-alertmanager.sh) || exit 2; \
	  kube=$$(tools/kube-testenv/build.sh) || exit 2; \
	  SIGNALGATE_E2E_ALERTMANAGER="$$am" E2ECOV_KUBE_BIN="$$kube" PATH="$(abspath $(BIN)):$$PATH" \
	  $(BIN)/e2ecov run -c e2e/stack.toml; code=$$?; \
	  $(BIN)/python e2e/summary.py build/e2e; exit $$code

# One venv per Python version (the first interpreter found for a version wins); an interpreter
# that does not run (e.g. a pyenv shim for a version not selected) is passed over, and named
# when no interpreter at all could be used.
test-pythons:  ## a throwaway venv with coverage.py per extra Python the tests use (3.12+)
	@found=; broken=; for py in $(EXTRA_PYTHONS); do \
	  ver=$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
	    || { broken="$$broken $$py"; continue; }; \
	  dir="$(PYTHONS_DIR)/$$ver"; \
	  case " $$found " in *" $$ver "*) continue;; esac; found="$$found $$ver"; \
	  "$$dir/bin/python" -c 'import coverage' 2>/dev/null && continue; \
	  echo "test-pythons: $$dir, a venv of $$py with $(COVERAGE_REQ)"; \
	  "$$py" -m venv --clear "$$dir" \
	    && "$$dir/bin/python" -m pip install -q --disable-pip-version-check '$(COVERAGE_REQ)' \
	    || { echo "test-pythons: could not prepare $$dir from $$py" >&2; exit 1; }; \
	done; \
	[ -n "$$found" ] || { for py in $$broken; do echo "test-pythons: $$py does not run; passed over"; done; \
	  echo "test-pythons: no Python 3.12+ found; e2ecov's 3.12+ core tests will be skipped"; }

# etcd, kube-apiserver and kubectl from their Go modules, for the Kubernetes-mode tests: built
# once per machine (about 8 minutes on two cores), then cached under ~/.cache/signalgate.
kube-testenv:  ## build the real Kubernetes API server the tests run against (cached)
	@tools/kube-testenv/build.sh >/dev/null

bench: $(STAMP)  ## ingest benchmark (prints throughput and latency per backend)
	$(BIN)/python bench/ingest.py

clean:  ## remove the virtualenv, build output and local data
	rm -rf $(VENV) build var .mypy_cache .ruff_cache .pytest_cache
