"""Reading one row a caller may see: the same shape for exchanges, quotes and webhooks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Select

from errors import NotFound


def one_or_not_found(engine: Engine, query: Select[Any], missing: NotFound) -> Any:
    """The query's row, or `missing` raised: a row that does not exist and one that belongs to
    another customer look the same (no existence oracle across customers)."""
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise missing
    return row
