# The two commands: `make run` (the whole stack on the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# The fast tier (tests/unit: in process, SQLite, fakes) alone must cover services/ at 90 % or more.
FAST = $(BIN)/python -m pytest tests/unit --cov=services --cov-report=term-missing:skip-covered --cov-fail-under=90

.PHONY: install run test test-fast test-unit test-browser test-contract migrate clean

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
	$(FAST)
	# every other tier, tests/browser included (the console in /usr/bin/chromium; they fail without it)
	$(BIN)/python -m pytest tests --ignore=tests/unit

test-fast test-unit: install
	$(FAST)

# Schemathesis over the OpenAPI document: in process, then over HTTP against gunicorn on PostgreSQL and Redis
test-contract: install
	$(BIN)/python -m pytest tests/contract

# the console in headless Chromium alone; screenshots in var/screenshots/
test-browser: install
	$(BIN)/python -m pytest tests/browser

migrate: install
	$(BIN)/bookmarket migrate

clean:
	rm -rf $(VENV) var .pytest_cache .coverage
