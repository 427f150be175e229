# feedstore: two commands on a fresh machine (Python >= 3.11 and make):
#   make demo   bootstrap .venv, install, run the whole pipeline on the default config
#   make test   bootstrap .venv, install, run every test (unit + integration)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.feedstore-installed
SPARK_STAMP := $(VENV)/.feedstore-spark-installed

.PHONY: demo test test-unit test-integration bench lint clean help

help:
	@echo "make demo | test | test-unit | test-integration | bench | lint | clean"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"Python >= 3.11 needed, found {sys.version.split()[0]} at {sys.executable}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# the `spark` extra (pyspark, ~490 MB): the tests run every engine-dependent test on DuckDB and Spark
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

demo: $(STAMP)
	$(BIN)/feedstore run

test: $(SPARK_STAMP)
	$(BIN)/python -m pytest

test-unit: $(SPARK_STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(SPARK_STAMP)
	$(BIN)/python -m pytest tests/integration

bench: $(SPARK_STAMP)
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/training_set.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data bench/out .pytest_cache
