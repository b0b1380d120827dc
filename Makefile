# The two commands: `make run` (the whole stack on the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test test-unit migrate clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/bookmarket up

test: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy --strict domain saga
	$(BIN)/mypy services infra api workers cli
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

migrate: install
	$(BIN)/bookmarket migrate

clean:
	rm -rf $(VENV) var .pytest_cache
