"""Processes that freeze and come back: SIGSTOPped workers and relays, and what they held.

A failpoint with the action `stop` makes a worker or relay SIGSTOP itself at a chosen
place. These helpers wait until the kernel reports it stopped, wake it (SIGCONT) when the
test says so, and wake every one of them before teardown kills anything, so no stopped
process outlives its test. They also read what a frozen process held: its PostgreSQL
backends, and the Dramatiq messages it fetched and never acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, select, text

from bank.client import BankClient
from models import balances, exchanges, ledger_entries
from services.exchanges import ExchangeRequest, create_exchange
from tests.support.outbox_rows import REDIS_NAMESPACE, unique_queue
from tests.support.processes import RedisServer, RelayGroup, start_private_redis, wait_until
from tests.support.topology import STEP_RESULT, Service, Topology, timeline

#: /proc/<pid>/stat's state letter for a process stopped by a signal (SIGSTOP).
STOPPED = "T"
#: What Dramatiq logs once a forked worker process consumes; it names that process's pid.
WORKER_READY_MARKER = "Worker process is ready for action."


# Stopped processes -----------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The kernel's state letter for `pid` (R, S, T, Z, ...), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (in parentheses) may hold spaces: the state follows its last ")".
    return stat.rsplit(")", 1)[1].split()[0]


def worker_process_pid(worker: Service) -> int:
    """The pid of the process Dramatiq forked to run the actors (the one a failpoint stops)."""
    for line in worker.output().splitlines():
        if WORKER_READY_MARKER in line and "[PID " in line:
            return int(line.split("[PID ", 1)[1].split("]", 1)[0])
    raise AssertionError(f"no ready worker process in {worker.describe()}")


@dataclass
class Frozen:
    """Processes that may SIGSTOP themselves: waited for, woken, and all woken at teardown."""

    pids: set[int] = field(default_factory=set)

    def watch(self, pid: int) -> int:
        self.pids.add(pid)
        return pid

    def wait_stopped(self, pid: int, timeout: float, describe: Callable[[], str]) -> None:
        self.watch(pid)

        def stopped() -> bool:
            state = process_state(pid)
            if state is None:
                raise AssertionError(f"pid {pid} exited instead of stopping: {describe()}")
            return state == STOPPED

        wait_until(stopped, timeout, what=lambda: f"pid {pid} to stop (state {process_state(pid)}): {describe()}")

    def resume(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: process_state(pid) != STOPPED, 10, what=f"pid {pid} to resume after SIGCONT")

    def resume_all(self) -> None:
        """SIGCONT every watched process still alive: a stopped one would ignore SIGTERM."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# What one test runs ---------------------------------------------------------------------------


@dataclass
class Scene:
    """A Topology (bank, workers, in-process relay) on a private redis-server, relay
    subprocesses, and the processes expected to freeze."""

    topology: Topology
    relays: RelayGroup
    frozen: Frozen
    redis_server: RedisServer

    def describe(self) -> str:
        parts = [self.topology.describe()]
        if self.relays.relays:
            parts.append(self.relays.describe())
        return "\n\n".join(parts)


@contextlib.contextmanager
def open_scene(engine: Engine, database_url: str, log_dir: Path) -> Iterator[Scene]:
    """Start a private redis-server (no persistence) and yield the scene; at the end wake every
    frozen process, stop every process, print their output (pytest shows it on failure).

    A redis-server of the test's own: the shared server's workflow databases are flushed by
    other process tests at their start and end, which would take this test's queues with them.
    Raises FileNotFoundError when redis-server is not installed.
    """
    server = start_private_redis(log_dir / "redis", "--save", "", "--appendonly", "no")
    scene = Scene(
        topology=Topology(log_dir=log_dir, engine=engine, database_url=database_url, redis_url=server.url,
                          queue=unique_queue("zombie")),
        relays=RelayGroup(log_dir=log_dir, database_url=database_url),
        frozen=Frozen(),
        redis_server=server,
    )
    try:
        yield scene
    finally:
        try:
            scene.frozen.resume_all()
            scene.relays.stop_all()
            scene.topology.stop_all()
            print(scene.describe())
        finally:
            server.kill()


# What a frozen process holds ----------------------------------------------------------------


def backends(engine: Engine, application_name: str) -> dict[int, str]:
    """PostgreSQL connections named `application_name` (PGAPPNAME), by pid, with their state."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid, state FROM pg_stat_activity WHERE datname = current_database()"
                 " AND application_name = :name"),
            {"name": application_name},
        )
        return {pid: state for pid, state in rows}


def in_transaction(engine: Engine, application_name: str) -> set[int]:
    """Connections of `application_name` idle inside an open transaction (as a frozen process leaves them)."""
    return {pid for pid, state in backends(engine, application_name).items()
            if (state or "").startswith("idle in transaction")}


def held_messages(redis_url: str, queue: str) -> dict[str, set[str]]:
    """Per Dramatiq worker id, the message ids (outbox ids) it fetched from `queue` and has not acked.

    Dramatiq's Redis broker keeps them in `__acks__.<worker id>.<queue>`, by per-enqueue id;
    the message's own id is in the JSON that the queue's hash stores under that id.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"{REDIS_NAMESPACE}:__acks__."
        held: dict[str, set[str]] = {}
        for key in client.scan_iter(match=f"{prefix}*.{queue}"):
            worker_id = key.decode()[len(prefix):-len(f".{queue}")]
            enqueue_ids = list(client.smembers(key))
            bodies = client.hmget(f"{REDIS_NAMESPACE}:{queue}.msgs", enqueue_ids) if enqueue_ids else []
            ids = {json.loads(body)["message_id"] for body in bodies if body is not None}
            if ids:
                held[worker_id] = ids
        return held
    finally:
        client.close()


# Reading the outcome --------------------------------------------------------------------------


def step_deliveries(*workers: Service) -> Counter[tuple[str, str, str]]:
    """(actor, exchange id, result) of every delivery the workers' DEBUG lines report."""
    return Counter((m.group(1), m.group(2), m.group(3)) for w in workers for m in STEP_RESULT.finditer(w.output()))


def events_of(engine: Engine, exchange_id: uuid.UUID, step: str, outcome: str) -> list[Any]:
    return [e for e in timeline(engine, exchange_id) if e.step == step and e.outcome == outcome]


def exchange_row(engine: Engine, exchange_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(exchanges).where(exchanges.c.id == exchange_id)).one()


@dataclass(frozen=True)
class MoneySnapshot:
    """Everything a late write could change: balances, postings, exchanges, the bank's transfers."""

    balances: frozenset[tuple[Any, ...]]
    entries: int
    totals: frozenset[tuple[Any, ...]]
    exchanges: frozenset[tuple[Any, ...]]
    bank: frozenset[tuple[str, str, str, Decimal, str]]


def money_snapshot(engine: Engine, bank: BankClient) -> MoneySnapshot:
    with engine.connect() as conn:
        balance_rows = conn.execute(select(balances.c.account_id, balances.c.currency, balances.c.available,
                                           balances.c.held)).all()
        entries = conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()
        totals = conn.execute(select(ledger_entries.c.account_id, ledger_entries.c.currency,
                                     func.sum(ledger_entries.c.amount))
                              .group_by(ledger_entries.c.account_id, ledger_entries.c.currency)).all()
        exchange_rows = conn.execute(select(exchanges.c.id, exchanges.c.state, exchanges.c.claim_token,
                                            exchanges.c.claimed_by, exchanges.c.to_amount)).all()
    return MoneySnapshot(
        balances=frozenset(tuple(r) for r in balance_rows),
        entries=entries,
        totals=frozenset(tuple(r) for r in totals),
        exchanges=frozenset(tuple(r) for r in exchange_rows),
        bank=frozenset((t.id, t.reference, t.status, t.amount, t.currency) for t in bank.all_applied()),
    )


def start_exchange(topology: Topology, account: uuid.UUID, amount: str = "100.00") -> uuid.UUID:
    """Accept a CAD -> USD exchange; its first outbox message waits for a relay."""
    request = ExchangeRequest(account, "CAD", "USD", Decimal(amount))
    return create_exchange(topology.engine, request, queue=topology.queue).exchange_id
