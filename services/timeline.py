"""Writing timeline events: one line per step attempt and outcome, in the step's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from models import exchange_events
from models.base import utcnow

_INSERT = insert(exchange_events)


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
    conn.execute(
        _INSERT,
        {
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
        },
    )
