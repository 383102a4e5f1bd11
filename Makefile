# The two commands: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench fmt clean chaos replicas

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

# The long seeded chaos run of replicas (10+ minutes; not part of `make test`): prints the
# counts (double commits, lost updates, stale-epoch commits, duplicate events) and failover times.
# The processes' logs stay in CHAOS_DIR.
CHAOS_ROUNDS ?= 18  # about 10 minutes on an otherwise idle 2-core machine (12 rounds: 7 min)
CHAOS_SEED ?= 1
CHAOS_TTL ?= 3
CHAOS_DIR ?= /tmp/pollerd-chaos
chaos: $(STAMP)
	POLLERD_CHAOS_ROUNDS=$(CHAOS_ROUNDS) POLLERD_CHAOS_SEED=$(CHAOS_SEED) \
		POLLERD_CHAOS_TTL=$(CHAOS_TTL) $(BIN)/pytest -q -s -p no:cacheprovider \
		--basetemp=$(CHAOS_DIR) tests/replication/test_chaos.py -k long_seeded

# Three replicas on a 3-node NATS cluster on this machine (examples/replicas); Ctrl-C stops them.
replicas: $(STAMP)
	examples/replicas/run.sh

fmt: $(STAMP)
	$(BIN)/ruff format src tests plugins bench
	$(BIN)/ruff check --fix src tests plugins bench

bench: $(STAMP)
	$(BIN)/python bench/ephemeral.py
	$(BIN)/python bench/nats.py
	$(BIN)/python bench/history.py

clean:
	rm -rf $(VENV) .pollerd .mypy_cache .ruff_cache .pytest_cache .coverage
