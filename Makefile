# Two commands for a fresh clone (see README.md):
#   make quickstart   set up .venv with the pinned dependencies and run the main job
#   make test         set up .venv and run the default (fast) test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: quickstart test test-slow bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,tfds]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/metaopt train quickstart --eval

test: $(STAMP)
	$(VENV)/bin/python -m pytest

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check metaopt tasks tests scripts experiments
