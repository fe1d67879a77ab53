"""What the system did, read from its database: exchange states, postings, timelines, the outbox."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from domain.states import TERMINAL_STATES
from harness.waits import wait_until
from models import exchange_events, exchanges, ledger_entries, outbox_messages

#: Terminal states, as stored.
TERMINAL = frozenset(s.value for s in TERMINAL_STATES)


def exchange_states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()))


def unpublished_total(engine: Engine) -> int:
    """Outbox rows of every queue not yet published."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox_messages)
                            .where(outbox_messages.c.published_at.is_(None))).scalar_one()


def settled(engine: Engine) -> bool:
    """Every exchange has stopped moving: terminal with its receipt sent, or parked for a person;
    and no outbox row waits to be published."""
    terminal = list(TERMINAL)
    with engine.connect() as conn:
        moving = conn.execute(
            select(func.count()).select_from(exchanges).where(
                ~exchanges.c.state.in_([*terminal, "needs_attention"])
                | (exchanges.c.state.in_(terminal) & exchanges.c.receipt_sent_at.is_(None)))
        ).scalar_one()
    return moving == 0 and unpublished_total(engine) == 0


class Observed(Protocol):
    """A running system: its database, and what its processes said (for a failure message)."""

    @property
    def engine(self) -> Engine: ...

    def describe(self) -> str: ...


def wait_settled(system: Observed, timeout: float) -> Counter[str]:
    """Until `settled`; the exchanges' states then. At the deadline the error shows `system.describe()`."""
    engine = system.engine
    wait_until(lambda: settled(engine), timeout, interval=0.25,
               what=lambda: f"every exchange to settle; states {dict(exchange_states(engine))}\n{system.describe()}")
    return exchange_states(engine)


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
    """The exchanges' events (of one exchange, if given) in the order they were written."""
    e = exchange_events
    query = select(e.c.exchange_id, e.c.step, e.c.outcome, e.c.attempt, e.c.worker, e.c.message_id, e.c.error,
                   e.c.detail).order_by(e.c.id)
    if exchange_id is not None:
        query = query.where(e.c.exchange_id == exchange_id)
    with engine.connect() as conn:
        return [Event(*row) for row in conn.execute(query)]
