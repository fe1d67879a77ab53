"""Writing outbox messages inside the caller's transaction.

On PostgreSQL an AFTER INSERT trigger (see the migrations) sends `NOTIFY outbox_messages`
when the transaction commits, so relays wake without polling and nothing extra is sent here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update

from models import outbox_messages
from models.base import utcnow

#: The channel the relay LISTENs on; the trigger in the migrations notifies it.
NOTIFY_CHANNEL = "outbox_messages"

_INSERT = insert(outbox_messages)
#: Set on the connection by `enqueue`, read at commit by the embedded relay's waiter: only a
#: commit that wrote a message wakes it (its own empty batches and heartbeats must not).
WROTE_OUTBOX = "fx.outbox_written"


def outbox_values(
    conn: Connection,
    *,
    actor: str,
    payload: dict[str, Any],
    queue: str,
    delay: timedelta | None = None,
    trace_headers: dict[str, str] | None = None,
    message_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A message's row, for the caller to insert in `conn`'s transaction (or `enqueue` does)."""
    message_id = message_id or uuid.uuid4()
    now = now or utcnow()
    if not delay:
        conn.info[WROTE_OUTBOX] = True  # a delayed row is found by the relay's poll, when due
    return {
        "id": message_id,
        "queue": queue,
        "actor": actor,
        "payload": payload,
        "created_at": now,
        "available_at": now + delay if delay else now,
        "attempts": 0,
        "trace_headers": trace_headers,
    }


def enqueue(
    conn: Connection,
    *,
    actor: str,
    payload: dict[str, Any],
    queue: str,
    delay: timedelta | None = None,
    trace_headers: dict[str, str] | None = None,
    message_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> uuid.UUID:
    """Add a message to the outbox in `conn`'s transaction; it is published only if that commits."""
    row = outbox_values(conn, actor=actor, payload=payload, queue=queue, delay=delay, trace_headers=trace_headers,
                        message_id=message_id, now=now)
    conn.execute(_INSERT, row)
    return row["id"]


#: Built once: every handed-off step runs it.
_TAKE = (update(outbox_messages)
         .where(outbox_messages.c.id == bindparam("t_id"), outbox_messages.c.published_at.is_(None))
         .values(published_at=bindparam("t_now")))


def take(conn: Connection, message_id: uuid.UUID, *, now: datetime) -> bool:
    """Mark a message its writer delivered itself as published, in `conn`'s transaction, so the
    relay does not send it too; False when the relay already did (its copy is then a duplicate,
    which the step's claim acknowledges with no effect)."""
    return conn.execute(_TAKE, {"t_id": message_id, "t_now": now}).rowcount == 1
