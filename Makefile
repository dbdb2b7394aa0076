# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config

.PHONY: run test lint typecheck golden bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/controlplane serve --config $(CONFIG)

test: $(STAMP)
	$(BIN)/ruff check controlplane tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check controlplane tests bench
	$(BIN)/ruff format --check controlplane tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

golden: $(STAMP)
	$(BIN)/pytest tests/golden --update-golden

bench: $(STAMP)
	$(BIN)/python bench/snapshot_push.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
