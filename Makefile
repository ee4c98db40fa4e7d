# The two commands of the README: `make demo` (the main job on the embedded defaults) and
# `make test` (lint, types and every test tier on real PostgreSQL and Redis).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services lint test demo bench bench-quick

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,local]"
	touch $@

install: $(BIN)/.installed

services:
	bash scripts/services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install services lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: install
	bash scripts/demo.sh

bench: install services
	$(BIN)/python bench/run_all.py

bench-quick: install services
	$(BIN)/python bench/run_all.py --quick
