"""Exchanges per state, read in constant time.

On PostgreSQL a trigger appends +1/-1 deltas (`exchange_state_deltas`, migration 0008) in the
same transaction as each insert and state change: exact, and append-only, so no transition
waits on a counter row another holds. A count is the folded total plus the deltas since;
`fold` (the reconciler's every pass) moves the deltas into the totals in one statement, so
what a read sums stays small. SQLite (the embedded mode, small by nature) counts the table.
`true_up` recounts from the table, for after a load or restore that bypassed the trigger.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text, union_all

from domain.states import ExchangeState
from models import exchange_state_counts as totals
from models import exchange_state_deltas as deltas
from models import exchanges


def by_state(conn: Connection) -> dict[str, int]:
    """Every state named, zeros included."""
    counts = {s.value: 0 for s in ExchangeState}
    if conn.dialect.name == "postgresql":
        parts = union_all(select(totals.c.state, totals.c.n.label("n")),
                          select(deltas.c.state, deltas.c.delta.label("n"))).subquery()
        rows = conn.execute(select(parts.c.state, func.sum(parts.c.n)).group_by(parts.c.state)).all()
    else:
        rows = conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()
    counts.update({state: int(n) for state, n in rows})
    return counts


#: Deletes the deltas it reads and adds them to the totals, in one statement (deltas appended
#: meanwhile are not in its snapshot and stay for the next fold).
_FOLD = text("""
    WITH moved AS (DELETE FROM exchange_state_deltas RETURNING state, delta)
    INSERT INTO exchange_state_counts AS c (state, n)
    SELECT state, sum(delta) FROM moved GROUP BY state
    ON CONFLICT (state) DO UPDATE SET n = c.n + EXCLUDED.n
""")


def fold(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(_FOLD)


def true_up(conn: Connection) -> dict[str, int]:
    """Recount from the table (blocking state changes meanwhile) and return the corrections made."""
    if conn.dialect.name != "postgresql":
        return {}
    before = by_state(conn)
    conn.execute(text("LOCK TABLE exchanges IN SHARE MODE"))
    conn.execute(deltas.delete())
    conn.execute(totals.delete())
    conn.execute(text("INSERT INTO exchange_state_counts (state, n) "
                      "SELECT state, count(*) FROM exchanges GROUP BY state"))
    after = by_state(conn)
    return {state: after[state] - before[state] for state in after if after[state] != before[state]}



