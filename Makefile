# servetune — set-up and test entry points (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint quickstart clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The whole suite: unit tests and the integration tiers (real processes, genai-bench).
test: setup
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# Unit tier only (seconds).
test-fast: setup
	$(PY) -m pytest -m "not integration"

quickstart: setup
	$(VENV)/bin/servetune run --replace examples/quickstart.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache servetune-results
