"""Writing timeline events: one line per step attempt and outcome, in the step's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from models import exchange_events, outbox_messages
from models.base import utcnow

_INSERT = insert(exchange_events)
#: Where `batched` keeps the lines recorded in a transaction, on its connection.
_BATCH = "fx.timeline_batch"


@contextmanager
def batched(conn: Connection) -> Iterator[None]:
    """Lines recorded inside are written together at the end, as one executemany in the caller's
    transaction (a fused step writes two or three); an exception discards them with the rest."""
    if _BATCH in conn.info:
        yield
        return
    lines: list[dict[str, Any]] = []
    conn.info[_BATCH] = lines
    try:
        yield
    finally:
        del conn.info[_BATCH]
    if lines:
        conn.execute(_INSERT, lines)


def record(
    conn: Connection,
    exchange_id: uuid.UUID,
    *,
    step: str,
    outcome: str,
    state: str,
    attempt: int = 0,
    worker: str | None = None,
    message_id: uuid.UUID | None = None,
    error: str | None = None,
    duration_ms: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    line = {
        "exchange_id": exchange_id,
        "step": step,
        "attempt": attempt,
        "outcome": outcome,
        "state": state,
        "worker": worker,
        "message_id": message_id,
        "error": None if error is None else error[:4000],
        "duration_ms": duration_ms,
        "detail": detail,
        "created_at": now or utcnow(),
    }
    batch = conn.info.get(_BATCH)
    if batch is None:
        conn.execute(_INSERT, line)
    else:
        batch.append(line)


#: Outcomes that mean something went wrong, shown at the top of a timeline.
TROUBLE_OUTCOMES = frozenset({"failed", "retrying", "lost_claim", "parked", "error", "rescued", "cancelled"})


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    step: str
    attempt: int
    outcome: str
    state: str
    error: str | None
    worker: str | None
    message_id: uuid.UUID | None
    duration_ms: int | None
    detail: dict[str, Any] | None
    #: When the message that ran this step was published by the relay, if known.
    message_published_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "step": self.step,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "state": self.state,
            "error": self.error,
            "worker": self.worker,
            "message_id": None if self.message_id is None else str(self.message_id),
            "message_published_at": None if self.message_published_at is None
            else self.message_published_at.isoformat(),
            "duration_ms": self.duration_ms,
            "detail": self.detail,
        }


def load(conn: Connection, exchange_id: uuid.UUID) -> list[TimelineEntry]:
    """Every event of one exchange, oldest first, joined to the outbox row of its message."""
    e, o = exchange_events, outbox_messages
    rows = conn.execute(
        select(e.c.created_at, e.c.step, e.c.attempt, e.c.outcome, e.c.state, e.c.error, e.c.worker,
               e.c.message_id, e.c.duration_ms, e.c.detail, o.c.published_at)
        .outerjoin(o, o.c.id == e.c.message_id)
        .where(e.c.exchange_id == exchange_id)
        .order_by(e.c.id)
    ).all()
    return [TimelineEntry(*row) for row in rows]


def of_exchange(engine: Engine, exchange_id: uuid.UUID) -> list[TimelineEntry]:
    """The exchange's timeline, oldest first, read in a connection of its own."""
    with engine.connect() as conn:
        return load(conn, exchange_id)


def first_trouble(entries: list[TimelineEntry]) -> TimelineEntry | None:
    """The latest entry that went wrong: what an operator wants to read first."""
    return next((entry for entry in reversed(entries) if entry.outcome in TROUBLE_OUTCOMES), None)
