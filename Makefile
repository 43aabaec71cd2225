# tracbot: `make demo` runs the bot on the embedded default; `make test`
# installs what the suite needs and runs all of it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint format bench

$(BIN)/tracbot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/tracbot

demo: setup
	$(BIN)/tracbot serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .

test: setup
	bash scripts/install-system-deps.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q

# The benchmark against the bare handler, the reference bot and pywa (minutes);
# `make bench ARGS=--quick` for a small run.
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(ARGS)
