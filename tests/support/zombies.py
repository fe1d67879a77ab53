"""Processes that freeze and come back, and what they held, for the zombie and redelivery tests.

The processes run in a `Topology` on a private redis-server; `Frozen` (harness.frozen)
wakes every stopped one before teardown kills anything. The readers below say what a
frozen process held (its PostgreSQL backends) and what the money looks like.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from bank.client import BankClient
from harness.frozen import Frozen
from harness.outcome import Event, timeline
from harness.servers import RedisServer, start_private_redis
from harness.topology import Topology
from models import balances, exchanges, ledger_entries
from services.exchanges import ExchangeRequest, create_exchange
from tests.conftest import unavailable
from tests.support.outbox_rows import unique_queue

# What one test runs ---------------------------------------------------------------------------


@dataclass
class Scene:
    """A Topology (bank, workers, relays) on a private redis-server, and the processes expected to freeze."""

    topology: Topology
    frozen: Frozen
    redis_server: RedisServer

    def describe(self) -> str:
        return self.topology.describe()


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
        topology=Topology(log_dir=log_dir, engine=engine, database_url=database_url, broker_url=server.url,
                          queue=unique_queue("zombie")),
        frozen=Frozen(),
        redis_server=server,
    )
    try:
        yield scene
    finally:
        try:
            scene.frozen.resume_all()  # a stopped process would ignore SIGTERM
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


@pytest.fixture
def scene(pg_engine: Engine, postgres_url: str, tmp_path: Path) -> Iterator[Scene]:
    """A pytest fixture (tests/conftest.py loads this module as a plugin): the test's processes,
    every frozen one woken and all stopped at the end; their output is printed (pytest shows it
    when the test failed)."""
    with contextlib.ExitStack() as stack:
        try:
            opened = stack.enter_context(open_scene(pg_engine, postgres_url, tmp_path))
        except FileNotFoundError as error:
            unavailable("redis-server", error)
        yield opened


# Reading the outcome --------------------------------------------------------------------------


def events_of(engine: Engine, exchange_id: uuid.UUID, step: str, outcome: str) -> list[Event]:
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
