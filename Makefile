# Two commands for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment (.venv) first; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := cogflight_core catalog flight_server flight_client cogflight

.PHONY: demo test lint typecheck check bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cogflight demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests benchmarks
	$(BIN)/ruff format --check $(PACKAGES)

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Every benchmark, full size (generates ~3 GB of COGs once into benchmarks/.cache).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.suite
	$(BIN)/python -m benchmarks.header_build
	$(BIN)/python -m benchmarks.engine_throughput
	$(BIN)/python -m benchmarks.flight_throughput

# The suite in a few minutes: 5490 px files, fewer chips.
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.suite --quick --results benchmarks/results/quick

clean:
	rm -rf $(VENV) demo-data collections .pytest_cache .mypy_cache .ruff_cache
