"""The exchange workflow as real processes: a bank, Dramatiq workers, and an in-process relay.

A test builds a `Topology` (fixture), starts what it needs, and at teardown every process
is stopped and its output printed (pytest shows it only when the test failed). Every wait
has a deadline and says what it waited for; durations are never asserted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import requests
from sqlalchemy import Engine, func, select

from bank.client import BankClient
from domain.states import TERMINAL_STATES
from models import exchange_events, exchanges, ledger_entries, outbox_messages
from outbox.daemon import build_relay
from outbox.publisher import Publisher
from outbox.relay import Relay
from outbox.store import OutboxRow
from settings import Settings
from tests.support.processes import PROJECT_ROOT, free_private_port, tail, wait_until

#: One worker process with four threads, as the issue asks; a short shutdown so teardown is quick.
WORKER_THREADS = 4
WORKER_SHUTDOWN_TIMEOUT_MS = 2_000
#: What Dramatiq logs once a worker process consumes.
WORKER_READY_MARKER = "Worker process is ready for action."
#: What Dramatiq's Redis consumer logs when a message id it fetched has no data any more:
#: another copy of the same message id was acknowledged first (a duplicate delivery dropped).
DROPPED_DUPLICATE_MARKER = "Found 'None' message in message cache"
#: The line jobs.actors logs (at DEBUG, `dramatiq -v`) when a step returns.
STEP_RESULT = re.compile(r"\[jobs\.actors\] \[DEBUG\] (\w+) ([0-9a-f-]{36}): (\w+)$", re.MULTILINE)
#: Seconds a started process gets to say it is ready.
START_TIMEOUT_SECONDS = 30.0
#: Seconds a process gets to exit after SIGTERM before its process group is killed.
STOP_TIMEOUT_SECONDS = 10.0

#: Short timings for tests. The lease exceeds the bank's connect + read timeouts; with
#: this heartbeat and maintenance chance a killed worker's messages come back in about 5 s
#: (shared/README.md); `dramatiq_worker_timeout` makes idle consumers poll every 100 ms.
FAST_WORKFLOW_ENV: dict[str, str] = {
    "STEP_LEASE_SECONDS": "3",
    "BANK_CONNECT_TIMEOUT_SECONDS": "0.5",
    "BANK_READ_TIMEOUT_SECONDS": "1",
    "STEP_MAX_RETRIES": "20",
    "STEP_MIN_BACKOFF_MS": "100",
    "STEP_MAX_BACKOFF_MS": "1000",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
    "BROKER_MAINTENANCE_CHANCE": "1000000",
    "dramatiq_worker_timeout": "100",
}

#: A Redis database of these tests' own on the shared server (the relay tests use 9). It is
#: not flushed: runs of the suite may overlap (another session, pytest-xdist), so each test
#: deletes only the keys of its own queue (see `forget_queue`).
WORKFLOW_REDIS_DB = 10


def workflow_redis_url(base_url: str) -> str:
    return urlsplit(base_url)._replace(path=f"/{WORKFLOW_REDIS_DB}").geturl()


# Processes -----------------------------------------------------------------------------


@dataclass
class Service:
    """A subprocess in its own process group, its output in `log_path`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self, lines: int = 40) -> str:
        state = "running" if self.is_running() else f"exited with {self.returncode}"
        text = self.output()
        problems = [line for line in text.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line
                    or "Traceback" in line]
        summary = f"{self.name} (pid {self.pid}, {state}); {len(problems)} error lines"
        if problems:
            summary += "; the first:\n  " + "\n  ".join(problems[:10])
        return f"{summary}\nlast {lines} lines of its output:\n{tail(text, lines)}"

    def wait_for_output(self, marker: str, count: int = 1, timeout: float = START_TIMEOUT_SECONDS) -> None:
        def seen() -> bool:
            if self.output().count(marker) >= count:
                return True
            if not self.is_running():
                raise AssertionError(f"{self.name} exited before printing {marker!r}: {self.describe()}")
            return False

        wait_until(seen, timeout, what=lambda: f"{marker!r} from {self.describe()}", interval=0.1)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {self.describe()}") from None

    def terminate(self) -> None:
        """SIGTERM once: Dramatiq takes a second SIGTERM as an order to kill its workers at once."""
        if self.is_running() and not self.terminated:
            self.terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, then SIGKILL to the whole process group (Dramatiq's forked workers too)."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        # The group is ours (start_new_session): it holds only this process and its children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()


def start_service(name: str, command: Sequence[str], log_dir: Path, env: Mapping[str, str]) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            list(command), cwd=PROJECT_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Service(name, process, log_path)


def clean_environment() -> dict[str, str]:
    """This process's environment without anything that could redirect or fault a child by accident."""
    env = dict(os.environ)
    for name in ("FX_FAILPOINTS", "REDIS_URL", "BROKER_URL", "SENTRY_DSN", "BANK_URL", "QUEUE_NAME",
                 "CREDIT_MAX_ATTEMPTS", "FLASK_APP", "FX_RATES"):
        env.pop(name, None)
    for name in list(env):
        if name.startswith("dramatiq_"):
            env.pop(name)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_environment(*, database_url: str, broker_url: str, bank_url: str, queue: str,
                       failpoints: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_environment()
    env.update(FAST_WORKFLOW_ENV)
    env.update(DATABASE_URL=database_url, BROKER_URL=broker_url, BANK_URL=bank_url, QUEUE_NAME=queue)
    if failpoints:
        env["FX_FAILPOINTS"] = failpoints
    env.update(extra or {})
    Settings.from_env(env)  # a bad test setting fails here, not silently in the worker
    return env


# The relay, in this process ---------------------------------------------------------------


class TwicePublisher:
    """Publishes every batch twice: each message reaches the broker twice with one message id."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.published: Counter[uuid.UUID] = Counter()

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        self.inner.publish(rows)
        self.inner.publish(rows)
        self.published.update(row.id for row in rows for _ in range(2))

    def close(self) -> None:
        self.inner.close()


class RelayThread:
    """`Relay.run()` in a thread of the test process; `stop()` ends it and re-raises what killed it."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def _run(self) -> None:
        try:
            self.relay.run()
        except BaseException as error:  # surfaced by stop() and describe()
            self.error = error

    def start(self) -> RelayThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.relay.stop()
        self.thread.join(timeout)
        self.relay.publisher.close()
        if self.relay.waiter is not None:
            self.relay.waiter.close()

    def describe(self) -> str:
        state = "running" if self.thread.is_alive() else "stopped"
        error = f"; died of {self.error!r}" if self.error else ""
        return f"in-process relay ({state}, {self.relay.totals}){error}"


# The topology -----------------------------------------------------------------------------


@dataclass
class Topology:
    """What one test runs: PostgreSQL (engine), Redis (a database of its own), bank, workers, relay."""

    log_dir: Path
    engine: Engine
    database_url: str
    redis_url: str
    queue: str
    bank: Service | None = None
    bank_url: str = ""
    workers: list[Service] = field(default_factory=list)
    relay: RelayThread | None = None

    def start_bank(self, seed: int = 1) -> BankClient:
        port = free_private_port()
        self.bank_url = f"http://127.0.0.1:{port}"
        command = (sys.executable, "-m", "bank", "--port", str(port), "--db", str(self.log_dir / "bank.db"),
                   "--seed", str(seed))
        self.bank = start_service("bank", command, self.log_dir, clean_environment())

        def healthy() -> bool:
            if not self.bank or not self.bank.is_running():
                raise AssertionError(f"the bank exited: {self.bank and self.bank.describe()}")
            try:
                return requests.get(self.bank_url + "/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, START_TIMEOUT_SECONDS, what="the bank to answer /health", interval=0.1)
        return self.bank_client()

    def bank_client(self) -> BankClient:
        return BankClient(self.bank_url, connect_timeout=2, read_timeout=10)

    def start_worker(self, name: str, *, threads: int = WORKER_THREADS, failpoints: str | None = None,
                     verbose: bool = False, extra: Mapping[str, str] | None = None,
                     wait_ready: bool = True) -> Service:
        assert self.bank_url, "start the bank first"
        env = worker_environment(database_url=self.database_url, broker_url=self.redis_url,
                                 bank_url=self.bank_url, queue=self.queue, failpoints=failpoints, extra=extra)
        command = [sys.executable, "-m", "dramatiq", "jobs.worker", "--processes", "1", "--threads", str(threads),
                   "--worker-shutdown-timeout", str(WORKER_SHUTDOWN_TIMEOUT_MS)]
        if verbose:
            command.append("--verbose")
        worker = start_service(f"worker-{name}", command, self.log_dir, env)
        self.workers.append(worker)
        if wait_ready:
            worker.wait_for_output(WORKER_READY_MARKER)
        return worker

    def start_relay(self, wrap: Callable[[Publisher], Publisher] | None = None) -> RelayThread:
        settings = Settings(database_url=self.database_url, broker_url=self.redis_url,
                            relay_poll_interval_seconds=0.2, relay_max_backoff_seconds=1.0)
        relay = build_relay(settings, self.engine)
        if wrap is not None:
            relay.publisher = wrap(relay.publisher)
        self.relay = RelayThread(relay).start()
        return self.relay

    def stop_all(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        for worker in self.workers:
            worker.terminate()  # all at once: each takes a few seconds to requeue and exit
        for worker in self.workers:
            worker.stop()
        if self.bank is not None:
            self.bank.stop()

    def describe(self) -> str:
        parts = [self.relay.describe()] if self.relay else []
        parts += [service.describe() for service in (*self.workers, *([self.bank] if self.bank else []))]
        return "\n\n".join(parts)

    def queued_in_broker(self) -> int:
        """Messages of this test's queue waiting in Redis, ready or delayed (in flight ones not counted)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return sum(client.llen(f"dramatiq:{q}") for q in (self.queue, f"{self.queue}.DQ"))
        finally:
            client.close()


def forget_queue(url: str, queue: str) -> None:
    """Delete what Dramatiq keeps in Redis for `queue`: messages, delayed, dead-lettered, unacknowledged."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        keys = [*client.scan_iter(f"dramatiq:{queue}*"), *client.scan_iter(f"dramatiq:__acks__.*.{queue}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# Reading the outcome ------------------------------------------------------------------------


def exchange_states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()))


def settled(engine: Engine) -> bool:
    """Every exchange has stopped moving: terminal with its receipt sent, or parked for a person;
    and no outbox row waits to be published."""
    terminal = [s.value for s in TERMINAL_STATES]
    with engine.connect() as conn:
        moving = conn.execute(
            select(func.count()).select_from(exchanges).where(
                ~exchanges.c.state.in_([*terminal, "needs_attention"])
                | (exchanges.c.state.in_(terminal) & exchanges.c.receipt_sent_at.is_(None)))
        ).scalar_one()
        unpublished = conn.execute(
            select(func.count()).select_from(outbox_messages).where(outbox_messages.c.published_at.is_(None))
        ).scalar_one()
    return moving == 0 and unpublished == 0


def wait_settled(topology: Topology, timeout: float) -> Counter[str]:
    wait_until(lambda: settled(topology.engine), timeout, interval=0.25,
               what=lambda: f"every exchange to settle; states {dict(exchange_states(topology.engine))}\n"
                            f"{topology.describe()}")
    return exchange_states(topology.engine)


@dataclass(frozen=True)
class Event:
    exchange_id: uuid.UUID
    step: str
    outcome: str
    attempt: int
    worker: str | None
    message_id: uuid.UUID | None
    error: str | None
    detail: dict[str, Any] | None


def timeline(engine: Engine, exchange_id: uuid.UUID | None = None) -> list[Event]:
    e = exchange_events
    query = select(e.c.exchange_id, e.c.step, e.c.outcome, e.c.attempt, e.c.worker, e.c.message_id, e.c.error,
                   e.c.detail).order_by(e.c.id)
    if exchange_id is not None:
        query = query.where(e.c.exchange_id == exchange_id)
    with engine.connect() as conn:
        return [Event(*row) for row in conn.execute(query)]


def step_results(*workers: Service) -> Counter[str]:
    """How the steps' deliveries ended, from the workers' DEBUG lines: advanced, skipped, ..."""
    return Counter(match.group(3) for worker in workers for match in STEP_RESULT.finditer(worker.output()))


def dropped_duplicates(*workers: Service) -> int:
    return sum(worker.output().count(DROPPED_DUPLICATE_MARKER) for worker in workers)


def postings_by_exchange(engine: Engine) -> dict[uuid.UUID, Counter[str]]:
    """Each exchange's ledger postings by kind (debit, credit, refund), counted once per posting."""
    le = ledger_entries
    with engine.connect() as conn:
        rows = conn.execute(
            select(le.c.exchange_id, le.c.kind, func.count(func.distinct(le.c.posting_id)))
            .where(le.c.exchange_id.is_not(None)).group_by(le.c.exchange_id, le.c.kind)
        ).all()
    result: dict[uuid.UUID, Counter[str]] = {}
    for exchange_id, kind, count in rows:
        result.setdefault(exchange_id, Counter())[kind] = count
    return result
