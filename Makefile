# `make run` and `make test` are the two set-up commands (README.md). Each creates the
# virtual environment and installs the project on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-relay

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app app serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

bench-relay: $(STAMP)
	$(BIN)/python -m bench.relay
