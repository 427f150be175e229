# feedstore: two commands on a fresh machine (Python >= 3.11 and make):
#   make demo   bootstrap .venv, install, run the whole pipeline on the default config
#   make test   bootstrap .venv, install, run every test (unit + integration)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.feedstore-installed
DEMO_STAMP := $(VENV)/.feedstore-demo
# Pinned installs (no resolution at install time): demo.lock = the runtime dependencies + the `ui` extra (so the
# `feedstore ui` the demo's last line suggests works); test.lock = runtime + the `airflow`, `dev` and `postgres`
# extras. `make lock` re-resolves both from pyproject.toml (demo.lock within test.lock's pins).
DEMO_LOCK := requirements/demo.lock
TEST_LOCK := requirements/test.lock
SPARK_STAMP := $(VENV)/.feedstore-spark-installed

.PHONY: demo test test-unit test-integration bench lint lock clean help

help:
	@echo "make demo | test | test-unit | test-integration | bench | lint | lock | clean"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"Python >= 3.11 needed, found {sys.version.split()[0]} at {sys.executable}"'
	$(PYTHON) -m venv $(VENV)

# what the demo needs: the runtime dependencies and Feast's UI, no Airflow, no test tools
$(DEMO_STAMP): pyproject.toml $(DEMO_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r $(DEMO_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(DEMO_STAMP)

# everything: runtime + Airflow + test and lint tools
$(STAMP): pyproject.toml $(TEST_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP) $(DEMO_STAMP)

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet '.[airflow,dev,postgres]'
	{ echo '# Runtime + the airflow, dev and postgres extras, pinned: what `make test` installs. Regenerate with `make lock`.'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^feedstore'; } > $(TEST_LOCK)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet -c $(TEST_LOCK) '.[ui]'
	{ echo '# Runtime dependencies of feedstore + the ui extra, pinned: what `make demo` installs. Regenerate with `make lock`.'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^feedstore'; } > $(DEMO_LOCK)
	rm -rf .lock-venv

# the `spark` extra (pyspark, ~490 MB): the tests run every engine-dependent test on DuckDB and Spark
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/feedstore run

test: $(SPARK_STAMP)
	$(BIN)/python -m pytest

test-unit: $(SPARK_STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(SPARK_STAMP)
	$(BIN)/python -m pytest tests/integration

bench: $(SPARK_STAMP)
	$(BIN)/python bench/commands.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/training_set.py
	$(BIN)/python bench/dag_parse.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data bench/out .pytest_cache .lock-venv
