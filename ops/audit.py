"""The audit trail: each operator action, written in the transaction that carried it out."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from models import operator_actions as oa

#: Entries shown on the audit page.
AUDIT_PAGE_SIZE = 100


def record(conn: Connection, *, operator: str, action: str, subject: str, result: str, now: datetime,
           exchange_id: uuid.UUID | None = None, **detail: Any) -> None:
    conn.execute(insert(oa).values(at=now, operator=operator, action=action, subject=subject,
                                   exchange_id=exchange_id, result=result, detail=detail or None))


def entries(conn: Connection, *, exchange_id: uuid.UUID | None = None, operator: str | None = None,
            limit: int = AUDIT_PAGE_SIZE) -> list[Any]:
    """Newest first; of one exchange, or of one operator, when asked."""
    query = select(oa)
    if exchange_id is not None:
        query = query.where(oa.c.exchange_id == exchange_id)
    if operator:
        query = query.where(oa.c.operator == operator)
    return conn.execute(query.order_by(oa.c.at.desc(), oa.c.id.desc()).limit(limit)).all()
