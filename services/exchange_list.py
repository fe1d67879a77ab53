"""A customer's exchanges, newest first, a page at a time (keyset paging on created_at and id).

The cursor is opaque to clients: the last row's (created_at, id), so a page costs an index
range scan whatever the page number, and rows inserted meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from errors import ValidationFailed
from models import accounts, exchanges

MAX_PAGE = 100
DEFAULT_PAGE = 20


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    #: Where the next page starts; None on the last page.
    next_cursor: str | None


def encode_cursor(created_at: datetime, exchange_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{exchange_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, exchange_id = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(exchange_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed("Bad cursor.", fields={"cursor": ["Not a cursor this API returned."]}) from None


def page_for_customer(engine: Engine, customer_id: uuid.UUID, *, limit: int = DEFAULT_PAGE,
                      cursor: str | None = None, states: Collection[str] = (),
                      created_after: datetime | None = None, created_before: datetime | None = None) -> Page:
    """The customer's exchanges (every account of theirs), newest first, filtered by state and creation time."""
    query = (
        select(exchanges)
        .join(accounts, accounts.c.id == exchanges.c.account_id)
        .where(accounts.c.customer_id == customer_id)
        .order_by(exchanges.c.created_at.desc(), exchanges.c.id.desc())
        .limit(limit + 1)
    )
    if states:
        query = query.where(exchanges.c.state.in_(sorted(states)))
    if created_after is not None:
        query = query.where(exchanges.c.created_at >= created_after)
    if created_before is not None:
        query = query.where(exchanges.c.created_at < created_before)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        query = query.where(or_(exchanges.c.created_at < at,
                                and_(exchanges.c.created_at == at, exchanges.c.id < last_id)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor(last.created_at, last.id))
