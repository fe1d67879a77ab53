"""Exchanges per state are counted by the database as they move (a trigger on PostgreSQL), so the
dashboard and /metrics read a few rows whatever the history; the counts always equal the table."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, event, func, select, update

from models import exchange_state_counts, exchanges
from ops import counts
from services.workflow import Workflow
from tests.ops_support import exchange_in
from tests.workflow_support import drive


def truth(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        found = dict(conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all())
    with engine.connect() as conn:
        return {state: found.get(state, 0) for state in counts.by_state(conn)}


def kept(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return counts.by_state(conn)


def test_the_counts_follow_every_insert_and_state_change(wf: Workflow, funded_account: uuid.UUID) -> None:
    engine = wf.engine
    assert sum(kept(engine).values()) == 0
    for state in ("pending", "quoted", "debited", "completed", "refunded", "failed", "needs_attention"):
        exchange_in(wf, funded_account, state, "10.00")
        assert kept(engine) == truth(engine)
    with engine.begin() as conn:  # an update that keeps the state moves nothing
        conn.execute(update(exchanges).values(last_error="touched"))
    assert kept(engine) == truth(engine)


def test_a_rolled_back_transition_counts_nothing(wf: Workflow, funded_account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, funded_account, "debited", "10.00")
    with pytest.raises(RuntimeError), wf.engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id).values(state="credited"))
        raise RuntimeError("rolled back")
    assert kept(wf.engine) == truth(wf.engine)
    assert drive(wf, exchange_id) == "completed"
    assert kept(wf.engine) == truth(wf.engine)


@pytest.mark.postgres
def test_reading_the_counts_does_not_read_the_exchanges(pg_engine: Engine) -> None:
    statements: list[str] = []
    event.listen(pg_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with pg_engine.connect() as conn:
        counts.by_state(conn)
    assert statements and not any(" exchanges" in s.replace("exchange_state_counts", "") for s in statements)


def test_true_up_recounts_after_a_load_that_bypassed_the_trigger(wf: Workflow, funded_account: uuid.UUID) -> None:
    if wf.engine.dialect.name != "postgresql":
        pytest.skip("SQLite counts the table itself: nothing to true up")
    exchange_in(wf, funded_account, "completed", "10.00")
    with wf.engine.begin() as conn:
        conn.execute(exchange_state_counts.delete())  # as a restore without the counts would leave them
    assert kept(wf.engine)["completed"] == 0
    with wf.engine.begin() as conn:
        assert counts.true_up(conn) == {"completed": 1}
    assert kept(wf.engine) == truth(wf.engine)
    with wf.engine.begin() as conn:
        assert counts.true_up(conn) == {}  # nothing to correct
