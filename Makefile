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
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# Unit tier only (seconds).
test-fast: setup
	$(PY) -m pytest -m "not integration"

quickstart: setup
	$(VENV)/bin/servetune sim predict --engine sglang --model-path meta-llama/Llama-3.1-8B-Instruct \
		--tp-size 1 --sim-gpu H100 --traffic "D(1024,256)" --concurrency 1 8 32 128

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache servetune-results
