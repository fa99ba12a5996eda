# The README's two commands are `make demo` and `make test`; `make check` is the fast loop.
# Everything a fresh machine needs (project venv, real vLLM, tiny model) is installed from here.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.ascendra-installed

# pytest exits 5 when a selection collects no tests; that is not a failure here.
PYTEST_OK = status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

# Root installs system packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install engines lint check test demo engines-stop redis

help:
	@echo "make demo     proxy + emulated engines + load + report"
	@echo "make test     install everything, lint, format check, types, then the whole suite (incl. real vLLM)"
	@echo "make check    lint, format check, types, unit tests (fast)"
	@echo "make lint     ruff check, ruff format --check, mypy"
	@echo "make install  project venv in $(VENV) with dev tools"
	@echo "make engines  real vLLM (CPU) + tiny model via scripts/engines.sh"
	@echo "make redis    Debian's redis-server (for the split-topology tests)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the package metadata changes.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

install: $(INSTALLED)

engines:
	scripts/engines.sh install

# Debian's redis-server: the split-topology tests start their own on a free port.
redis:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

engines-stop:
	scripts/engines.sh stop --all

# The style and type gate: `make check` and `make test` (what CI runs) both start with it.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint
	$(BIN)/pytest -q tests/unit; $(PYTEST_OK)

# lint first: a style or type error fails in seconds, before the engines are installed.
test: lint engines redis
	ASCENDRA_REQUIRE_REAL_VLLM=1 ASCENDRA_REQUIRE_REDIS=1 $(BIN)/pytest -q tests; $(PYTEST_OK)

demo: install
	$(BIN)/ascendra-proxy demo
