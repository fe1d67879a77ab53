"""What a topology runs and with which settings: the two designs, the layouts, the settings presets."""

from __future__ import annotations

from dataclasses import dataclass

#: How often a test's relay polls and how long it backs off at most, in seconds: short, so a
#: test never waits long for a row or a broker that came back.
RELAY_POLL_INTERVAL_SECONDS = 0.2
RELAY_MAX_BACKOFF_SECONDS = 1.0

#: Short timings for tests. The lease exceeds the bank's connect + read timeouts; with
#: this heartbeat and maintenance chance a killed worker's messages come back in about 5 s
#: (shared/README.md); `dramatiq_worker_timeout` makes idle consumers poll every 100 ms.
TEST_ENV: dict[str, str] = {
    "STEP_LEASE_SECONDS": "3",
    "BANK_CONNECT_TIMEOUT_SECONDS": "0.5",
    "BANK_READ_TIMEOUT_SECONDS": "1",
    "STEP_MAX_RETRIES": "20",
    "STEP_MIN_BACKOFF_MS": "100",
    "STEP_MAX_BACKOFF_MS": "1000",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
    "BROKER_MAINTENANCE_CHANCE": "1000000",
    "dramatiq_worker_timeout": "100",
    "RELAY_POLL_INTERVAL_SECONDS": str(RELAY_POLL_INTERVAL_SECONDS),
    "RELAY_MAX_BACKOFF_SECONDS": str(RELAY_MAX_BACKOFF_SECONDS),
    # A killed or frozen active relay is replaced by a standby within 2 s.
    "RELAY_LEASE_SECONDS": "2",
    # A first message the web committed but never sent reaches the relay 3 s later.
    "OUTBOX_DIRECT_GRACE_SECONDS": "3",
}
#: The benchmarks' short, test-like timings: a killed worker's messages come back in about
#: 5 s, a stuck exchange is re-sent after 10 s, a bank call gives up after 1.5 s.
BENCH_ENV: dict[str, str] = {
    "STEP_LEASE_SECONDS": "5",
    "BANK_READ_TIMEOUT_SECONDS": "1",
    "BANK_CONNECT_TIMEOUT_SECONDS": "0.5",
    "STEP_MIN_BACKOFF_MS": "100",
    "STEP_MAX_BACKOFF_MS": "2000",
    "CREDIT_MAX_ATTEMPTS": "8",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
    "BROKER_MAINTENANCE_CHANCE": "1000000",
    "dramatiq_worker_timeout": "100",
    "STUCK_AFTER_SECONDS": "10",
    "RECONCILE_INTERVAL_SECONDS": "2",
    "RELAY_MAX_BACKOFF_SECONDS": "2",
    # The API's per-key rate limit must not be what is measured.
    "API_RATE_LIMIT": "1000000 per minute",
}


@dataclass(frozen=True)
class Design:
    """What runs as web and worker, and whether the outbox's relays and reconciler exist."""

    name: str
    web_app: str
    worker_module: str
    relays: bool


OUTBOX = Design("outbox", "app:app", "jobs.worker", relays=True)
NAIVE = Design("naive", "bench.naive:app", "bench.naive", relays=False)
DESIGNS = {d.name: d for d in (OUTBOX, NAIVE)}


@dataclass(frozen=True)
class Layout:
    """How many of each process `start_all` starts, and how they are sized."""

    relays: int = 2
    workers: int = 2
    worker_threads: int = 4
    web_workers: int = 2
    web_threads: int = 4
    reconciler: bool = True
    worker_shutdown_timeout_ms: int = 5_000


#: A test's workers: one process with four threads; a short shutdown so teardown is quick.
TEST_LAYOUT = Layout(worker_shutdown_timeout_ms=2_000)
