# Two commands for a fresh machine (see README.md):
#   make run   install, start the BigQuery emulator, bootstrap, create the admin, serve on :8000
#   make test  install (and Debian's chromium if missing), then ruff format --check, ruff check and the
#              whole pytest suite, browser tests included
# Everything else here is an internal helper.

SHELL := /bin/bash
.DEFAULT_GOAL := test

# The first Python 3.11+ we find; override with `make PYTHON=/path/to/python3.x ...`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when the dependencies change: a second `make` costs nothing.
STAMP := $(VENV)/.installed

PYTHON_OK := import sys; sys.exit(sys.version_info < (3, 11))

.PHONY: run test

run: $(STAMP)
	BIN=$(BIN) bash scripts/run.sh

test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n 2

$(BIN)/python:
	@if [ -z "$(PYTHON)" ] || ! command -v "$(PYTHON)" >/dev/null; then \
		echo "error: no Python found ('$(PYTHON)'); install Python 3.11 or newer" \
			"(make PYTHON=/path/to/python3.11 ...)" >&2; exit 1; fi
	@if ! "$(PYTHON)" -c '$(PYTHON_OK)'; then \
		echo "error: $(PYTHON) is Python $$("$(PYTHON)" -V 2>&1 | cut -d' ' -f2), 3.11 or newer is needed" \
			"(make PYTHON=/path/to/python3.11 ...)" >&2; exit 1; fi
	"$(PYTHON)" -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@if ! $(BIN)/python -c '$(PYTHON_OK)'; then \
		echo "error: $(VENV) was made with Python < 3.11; remove it (rm -r $(VENV)) and run make again" >&2; \
		exit 1; fi
	@echo "Installing into $(VENV) (about a minute the first time)..."
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[emulator,dev]'
	@touch $@
