"""Finding the exchange an account's Idempotency-Key already made (a retried request's answer)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from models import accounts, exchanges


def _by_key_statement(owned: bool) -> Select[Any]:
    query = (
        select(
            exchanges.c.id,
            exchanges.c.account_id,
            exchanges.c.from_currency,
            exchanges.c.to_currency,
            exchanges.c.amount,
            exchanges.c.created_at,
            exchanges.c.request_fingerprint,
        ).where(exchanges.c.account_id == bindparam("k_account"), exchanges.c.idempotency_key == bindparam("k_key"))
    )
    if owned:
        query = query.join(accounts, accounts.c.id == exchanges.c.account_id).where(
            accounts.c.customer_id == bindparam("k_owner"))
    return query


_BY_KEY = {owned: _by_key_statement(owned) for owned in (False, True)}


def find_by_key(conn: Connection, account_id: uuid.UUID, key: str, owner: uuid.UUID | None) -> Any:
    """The earlier exchange's row (its fingerprint included), or None; with `owner`, only theirs."""
    return conn.execute(_BY_KEY[owner is not None], {"k_account": account_id, "k_key": key, "k_owner": owner}).first()
