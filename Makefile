# NextTrack Streams. `make demo` and `make test` each do all set-up first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
KAFKA_STAMP := $(VENV)/.kafka-fetched
PYTEST_ARGS ?=

.PHONY: setup venv kafka chromium prometheus demo test lint format bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (need Python >= 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## create .venv and install the package with its test extra (train included)

kafka: $(STAMP)  ## fetch the Kafka broker jars from Maven Central (cached in ~/.cache/nexttrack)
	$(VENV)/bin/nexttrack broker fetch

setup: venv kafka  ## everything: virtualenv, packages, Kafka jars

chromium:  ## headless Chromium for the status-page browser test (Debian's; skipped if present)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else echo "warning: no chromium and no apt-get: the status-page browser test will fail"; fi

prometheus:  ## Prometheus and promtool for the deploy/prometheus tests (Debian's; skipped if present)
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	else echo "warning: no promtool and no apt-get: the Prometheus tests will fail"; fi

demo: setup  ## start a broker, generate data, train, stream events, show recommendations
	$(VENV)/bin/nexttrack demo

test: setup chromium prometheus  ## lint, then the whole test suite (starts its own Kafka broker)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -ra $(PYTEST_ARGS)

lint: venv  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv  ## apply ruff formatting and autofixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup  ## passthrough vs full worker (lstm, 100k tracks): throughput, latency, peak memory
	$(VENV)/bin/nexttrack bench --replay 20000

clean:  ## remove the virtualenv and local state (keeps the Maven/pip caches)
	rm -rf $(VENV) .nexttrack .pytest_cache
