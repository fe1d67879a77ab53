# `make run` and `make test` are the two set-up commands (README.md). Each creates the
# virtual environment and installs the project on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast screenshots lint bench-relay bench-chaos bench-e2e bench-cluster browser pgbouncer netns-tools

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# `make run PORT=5077` when 5000 is taken (macOS gives it to AirPlay).
PORT ?= 5000
run: $(STAMP)
	$(BIN)/flask --app app serve --port $(PORT)

# The browser tests drive Debian's Chromium; install it where we may (root with apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: the browser tests will be skipped (they fail in CI)"

# The PgBouncer tests run a private Debian pgbouncer in transaction pooling; install it where we may.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || { [ "$$(id -u)" = 0 ] && \
		command -v apt-get >/dev/null && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; } || \
		echo "pgbouncer is not installed: the PgBouncer tests will be skipped (they fail in CI)"

# The cluster run (bench/cluster, tests/test_cluster.py) partitions hosts with iptables in network namespaces.
netns-tools:
	@command -v iptables >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; } || \
		echo "iptables is not installed: the cluster test will be skipped (it fails in CI)"

# Test workers side by side (pytest-xdist); each has its own database, Redis database, queue
# names and ports (tests/conftest.py). Measured on this 2-core machine in README.md ("Two commands").
TEST_WORKERS ?= 4
# The three groups partition the suite by marker (setup.cfg): tests that start nothing but
# threads, tests that start processes (the roles, servers, Chromium, namespaces), and tests that
# need the machine to themselves. Run apart, the process tests' waits for leases and start-ups
# are not stretched by the thread tests' computing (measured: 1.4 times faster than mixed).
FAST_TESTS := not process and not browser and not netns and not serial
PROCESS_TESTS := (process or browser or netns) and not serial

test: $(STAMP) browser pgbouncer netns-tools
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS) -m "$(FAST_TESTS)" --durations=10
	$(BIN)/pytest -n $(TEST_WORKERS) -m "$(PROCESS_TESTS)" --durations=20
	$(BIN)/pytest -m serial --durations=5

# The inner loop: the tests that need no process, browser or namespace (in-process PostgreSQL,
# SQLite, Redis and RabbitMQ tests included).
test-fast: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "$(FAST_TESTS)" -q

# Take the README's pictures in docs/ again from the pages as the browser tests render them.
screenshots: $(STAMP) browser
	DOCS_SCREENSHOTS=1 $(BIN)/pytest -n $(TEST_WORKERS) -m browser -q

bench-relay: $(STAMP)
	$(BIN)/python -m bench.relay

# The topology under kill -9, bank faults, a Redis restart and dropped connections;
# ours and the naive design side by side (README.md, "Proof under fire").
bench-chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --design both

# Every role on a host of its own (network namespaces, root only), faults between the hosts (README.md, "Past one machine").
bench-cluster: $(STAMP) pgbouncer netns-tools
	$(BIN)/python -m bench.cluster

bench-e2e: $(STAMP)
	$(BIN)/python -m bench.e2e --design both
