PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,lint]'
	@touch $@ $(VENV)/.installed

## make run: create the environment, install, and start the whole system (embedded mode)
run: $(VENV)/.installed
	$(BIN)/prost up

## make test: install what the tests need and run them all
test: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

## make lint: ruff, formatting, mypy and the architecture contracts
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) .prost .pytest_cache .mypy_cache .ruff_cache
