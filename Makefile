# Entry points for developers and CI. `make run` and `make test` set everything up first:
# the virtualenv, the project's install (again only when pyproject.toml changed) and Chromium.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means "install again".
STAMP := $(VENV)/.install-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test check openapi migrate setup chromium

## run: set up, then serve on HOST:PORT (default 127.0.0.1:8000); migrations run first
run: setup chromium
	$(BIN)/agent-sessions serve --host $(HOST) --port $(PORT)

## test: set up, then the whole suite on SQLite, and on Postgres when reachable (required if CI=true)
test: setup chromium
	VENV=$(VENV) bash scripts/run-tests.sh $(PYTEST_ARGS)

## check: ruff lint, ruff format, mypy, and that openapi/openapi.json is current
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app
	$(BIN)/python -m app.openapi --check

## openapi: regenerate openapi/openapi.json from the app
openapi: setup
	$(BIN)/python -m app.openapi

## migrate: bring DATABASE_URL's database to the newest schema
migrate: setup
	$(BIN)/agent-sessions migrate

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	touch $@

chromium:
	bash scripts/ensure-chromium.sh
