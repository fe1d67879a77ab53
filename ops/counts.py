"""Exchanges per state, read in constant time.

On PostgreSQL a trigger keeps `exchange_state_counts` (migration 0008) in the same transaction
as each insert and state change, so the counts are exact and cost a few rows to read, however
many exchanges there are. SQLite (the embedded mode, small by nature) counts the table.
`true_up` recounts from the table, for after a bulk load or a restore that bypassed the trigger.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from domain.states import ExchangeState
from models import exchange_state_counts as c
from models import exchanges


def by_state(conn: Connection) -> dict[str, int]:
    """Every state named, zeros included."""
    counts = {s.value: 0 for s in ExchangeState}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(select(c.c.state, func.sum(c.c.n)).group_by(c.c.state)).all()
    else:
        rows = conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()
    counts.update({state: int(n) for state, n in rows})
    return counts


def true_up(conn: Connection) -> dict[str, int]:
    """Recount from the table (blocking state changes meanwhile) and return the corrections made."""
    if conn.dialect.name != "postgresql":
        return {}
    before = by_state(conn)
    conn.execute(text("LOCK TABLE exchanges IN SHARE MODE"))
    conn.execute(c.delete())
    conn.execute(text("INSERT INTO exchange_state_counts (state, slot, n) "
                      "SELECT state, 0, count(*) FROM exchanges GROUP BY state"))
    after = by_state(conn)
    return {state: after[state] - before[state] for state in after if after[state] != before[state]}
