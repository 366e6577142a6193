# The few commands people run.  Every target creates the virtualenv it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DEMO    ?= examples/traces/h200_tp4/nsys/h200_tp4.sqlite.gz
PYTEST_ARGS ?=

.PHONY: install install-test demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU build (see pyproject.toml) so no CUDA wheels come in.
install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

demo: install
	$(BIN)/tracekit ingest $(DEMO) -o demo.parquet
	$(BIN)/tracekit query phase_breakdown demo.parquet
	$(BIN)/tracekit query op_share demo.parquet
	$(BIN)/tracekit comm demo.parquet

test: install-test
	$(BIN)/ruff check tracekit nvtx_ranges tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tracekit nvtx_ranges
	$(BIN)/mypy

bench: install-test
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo.parquet .pytest_cache .mypy_cache .ruff_cache
