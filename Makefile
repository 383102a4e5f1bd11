# The two commands: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pollerd run -c pollers.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests plugins bench
	$(BIN)/ruff format --check src tests plugins bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q --cov --cov-report=term

test: lint typecheck unit

fmt: $(STAMP)
	$(BIN)/ruff format src tests plugins bench
	$(BIN)/ruff check --fix src tests plugins bench

bench: $(STAMP)
	$(BIN)/python bench/ephemeral.py
	$(BIN)/python bench/nats.py

clean:
	rm -rf $(VENV) .pollerd .mypy_cache .ruff_cache .pytest_cache .coverage
