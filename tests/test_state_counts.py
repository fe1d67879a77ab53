"""Exchanges per state are counted by the database as they move (a trigger on PostgreSQL), so the
dashboard and /metrics read a few rows whatever the history; the counts always equal the table."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, event, func, select, update

from models import exchange_state_counts, exchange_state_deltas, exchanges
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
def test_a_fold_moves_the_deltas_into_the_totals_and_the_counts_stay_the_same(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    for state in ("completed", "refunded", "pending"):
        exchange_in(wf, funded_account, state, "10.00")
    before = kept(wf.engine)
    with wf.engine.begin() as conn:
        counts.fold(conn)
    assert kept(wf.engine) == before == truth(wf.engine)
    if wf.engine.dialect.name == "postgresql":
        with wf.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(exchange_state_deltas)).scalar_one() == 0


@pytest.mark.postgres
def test_concurrent_transitions_neither_deadlock_nor_miscount(pg_engine: Engine, bank_url: str) -> None:
    from decimal import Decimal
    from threading import Thread

    from services.accounts import open_account
    from tests.ops_support import make_workflow
    from tests.workflow_support import accept

    wf = make_workflow(pg_engine, bank_url)
    account = open_account(pg_engine, "Concurrent", {"CAD": Decimal("100000.00")})
    ids = [accept(pg_engine, account, "1.00") for _ in range(24)]
    errors: list[BaseException] = []

    def run(chunk: list[uuid.UUID]) -> None:
        try:
            for exchange_id in chunk:
                assert drive(wf, exchange_id) == "completed"
        except BaseException as error:
            errors.append(error)

    threads = [Thread(target=run, args=(ids[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert kept(pg_engine) == truth(pg_engine)
    assert kept(pg_engine)["completed"] == len(ids)


@pytest.mark.postgres
def test_reading_the_counts_does_not_read_the_exchanges(pg_engine: Engine) -> None:
    statements: list[str] = []
    event.listen(pg_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with pg_engine.connect() as conn:
        counts.by_state(conn)
    assert statements and not any(" exchanges" in s.replace("exchange_state_counts", "") for s in statements)


@pytest.mark.postgres
def test_true_up_recounts_after_a_load_that_bypassed_the_trigger(pg_engine: Engine, bank_url: str) -> None:
    from decimal import Decimal

    from services.accounts import open_account
    from tests.ops_support import make_workflow

    wf = make_workflow(pg_engine, bank_url)
    exchange_in(wf, open_account(pg_engine, "Restored", {"CAD": Decimal("100.00")}), "completed", "10.00")
    with pg_engine.begin() as conn:
        conn.execute(exchange_state_counts.delete())  # as a restore without the counts would leave them
        conn.execute(exchange_state_deltas.delete())
    assert kept(pg_engine)["completed"] == 0
    with pg_engine.begin() as conn:
        assert counts.true_up(conn) == {"completed": 1}
    assert kept(pg_engine) == truth(pg_engine)
    with pg_engine.begin() as conn:
        assert counts.true_up(conn) == {}  # nothing to correct
