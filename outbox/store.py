"""Every SQL statement of the outbox relay, in one place, so they can be reviewed together."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Update, Uuid, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from models import outbox_messages as t


@dataclass(frozen=True)
class OutboxRow:
    id: uuid.UUID
    queue: str
    actor: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    trace_headers: dict[str, str] | None


@dataclass(frozen=True)
class OutboxStats:
    unpublished: int
    due: int
    oldest_unpublished_age_seconds: float | None
    published_last_minute: int
    failing: int


_CLAIM_COLUMNS = (t.c.id, t.c.queue, t.c.actor, t.c.payload, t.c.created_at, t.c.attempts, t.c.trace_headers)


@functools.cache
def _claim_query(dialect: str, limit: int) -> Select[Any]:
    query = (
        select(*_CLAIM_COLUMNS)
        .where(t.c.published_at.is_(None), t.c.available_at <= bindparam("o_now"))
        .order_by(t.c.available_at)
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if dialect == "postgresql" else query


def claim_batch(conn: Connection, *, limit: int, now: datetime) -> list[OutboxRow]:
    """Lock up to `limit` due, unpublished rows for this transaction.

    On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several relays run side by side, each
    taking rows the others have not locked. SQLite has one writer at a time anyway
    (the engine begins every transaction IMMEDIATE), so there it is a plain select.
    """
    return [OutboxRow(*row) for row in conn.execute(_claim_query(conn.dialect.name, limit), {"o_now": now})]


def _ids_match(dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        # One array parameter: the same prepared statement whatever the batch size.
        return t.c.id == any_(bindparam("o_ids", type_=ARRAY(Uuid)))
    return t.c.id.in_(bindparam("o_ids", expanding=True))


@functools.cache
def _mark_published(dialect: str) -> Update:
    return update(t).where(_ids_match(dialect)).values(published_at=bindparam("o_now"), attempts=t.c.attempts + 1,
                                                       last_error=None)


@functools.cache
def _record_failure(dialect: str) -> Update:
    return update(t).where(_ids_match(dialect)).values(attempts=t.c.attempts + 1, last_error=bindparam("o_error"))


def mark_published(conn: Connection, ids: Sequence[uuid.UUID], *, now: datetime) -> None:
    conn.execute(_mark_published(conn.dialect.name), {"o_ids": list(ids), "o_now": now})


def record_failure(conn: Connection, ids: Sequence[uuid.UUID], *, error: str) -> None:
    """Keep the rows unpublished and say why; the relay retries them after its backoff."""
    conn.execute(_record_failure(conn.dialect.name), {"o_ids": list(ids), "o_error": error[:2000]})


def purge_published(conn: Connection, *, older_than: datetime, limit: int) -> int:
    """Delete up to `limit` rows published before `older_than`; small batches keep locks short."""
    victims = (
        select(t.c.id)
        .where(t.c.published_at.is_not(None), t.c.published_at < older_than)
        .order_by(t.c.published_at)
        .limit(limit)
        .scalar_subquery()
    )
    return conn.execute(delete(t).where(t.c.id.in_(victims))).rowcount


def stats(conn: Connection, *, now: datetime) -> OutboxStats:
    """Two statements, each answered from its partial index: the backlog's rows and the last
    minute's, never the whole outbox (which holds RELAY_RETENTION_HOURS of history)."""
    unpublished, due, oldest, failing = conn.execute(
        select(
            func.count(),
            func.count().filter(t.c.available_at <= now),
            func.min(t.c.created_at),
            func.count().filter(t.c.last_error.is_not(None)),
        ).where(t.c.published_at.is_(None))
    ).one()
    recent = conn.execute(select(func.count()).where(t.c.published_at.is_not(None),
                                                     t.c.published_at >= now - timedelta(minutes=1))).scalar_one()
    if oldest is not None and oldest.tzinfo is None:  # SQLite's aggregate bypasses the column type
        from datetime import UTC

        oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=UTC)
    return OutboxStats(
        unpublished=unpublished,
        due=due,
        oldest_unpublished_age_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        published_last_minute=recent,
        failing=failing,
    )
