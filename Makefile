# Two commands for a newcomer on a fresh machine:
#   make serve   run the broker (HTTP on 127.0.0.1:8765/mcp/; embedded Redis unless REDIS_URL is set)
#   make test    run the whole test suite (installs what it needs, starts throwaway redis-servers)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install serve test lint bench redis-server chromium package-check

$(BIN)/broker: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/broker

install: $(BIN)/broker

# The tests and the embedded default need the redis-server binary (Debian's package).
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The web view's browser tests drive Debian's chromium through Playwright (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { \
	  echo "installing chromium from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

serve: install
	@[ -n "$$REDIS_URL" ] || $(MAKE) --no-print-directory redis-server
	$(BIN)/broker serve

lint: install
	$(BIN)/ruff check broker workers tests benchmarks examples dev
	$(BIN)/ruff format --check broker workers tests benchmarks examples dev

# Three test processes: most tests wait on Redis, subprocesses and sockets, not on the CPU,
# so even two cores run the suite in about half the time of one process. loadgroup: one test at
# a time to whichever process is free, slowest modules first (tests/conftest.py, SLOW_FIRST).
# The slowest steps are printed so a growing CI time shows where it went (docs/development.md).
test: install redis-server chromium lint
	$(BIN)/pytest -q -n 3 --dist loadgroup --durations=15

# The wheel as users get it: built from the checkout's files, installed with its dependencies into
# a fresh venv outside the tree, serving MCP over HTTP (also part of `make test`).
package-check: install redis-server
	$(BIN)/pytest -q tests/test_wheel.py

bench: install redis-server
	$(BIN)/python -m benchmarks.messaging
	$(BIN)/python -m benchmarks.reservations
	$(BIN)/python -m benchmarks.realtime
	$(BIN)/python -m benchmarks.durability
	$(BIN)/python -m benchmarks.fairness
	$(BIN)/python -m benchmarks.observability
	$(BIN)/python -m benchmarks.scaling
	$(BIN)/python -m benchmarks.cluster
	$(BIN)/python -m benchmarks.transport
	$(BIN)/python -m benchmarks.sizing
	$(BIN)/python -m benchmarks.bench_web
