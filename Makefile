SHELL := /bin/bash
# eoseg — the two commands a new machine needs: `make demo` and `make test`.
# Both create/refresh .venv themselves (CPU torch by default; see README for GPUs).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev

.PHONY: demo test test-all lint typecheck clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@echo "installing eoseg and its dependencies into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" 2>&1 | grep -v "^WARNING: Location" ; \
	  test $${PIPESTATUS[0]} -eq 0
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eoseg demo --workdir eoseg-demo

# Everything CI runs: all tests that need no GPU (slow and real-data ones included).
test: $(STAMP)
	$(PY) -m pytest -m "not gpu" -q --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy eoseg flows

clean:
	rm -rf eoseg-demo .pytest_cache .mypy_cache .ruff_cache
