"""Accepting an exchange is all or nothing: a fault after the exchange insert leaves no trace.

Two faults: one injected in Python (raised after the exchange, its outbox row and its timeline
entry are written, before the commit), in the transactional accept (SQLite's, and PostgreSQL's for a
quoted request or a refusal); and one raised by PostgreSQL itself (a trigger that refuses the
outbox insert), which also hits PostgreSQL's one-statement accept in the middle of its statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DBAPIError

import services.exchanges
from models import balances, exchange_events, exchanges, ledger_entries, outbox_messages
from services.exchanges import ExchangeRequest, create_exchange

FAULT_TRIGGER = "test_outbox_messages_fault"


class InjectedFault(RuntimeError):
    pass


def written(engine: Engine, account: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        state: dict[str, Any] = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (exchanges, outbox_messages, exchange_events, ledger_entries)
        }
        state["CAD"] = tuple(
            conn.execute(
                select(balances.c.available, balances.c.held).where(
                    balances.c.account_id == account, balances.c.currency == "CAD"
                )
            ).one()
        )
    return state


def untouched(engine: Engine, account: uuid.UUID) -> dict[str, Any]:
    """The state before any exchange: the `funded_account` fixture's funding and nothing else."""
    state = written(engine, account)
    assert (state["exchanges"], state["outbox_messages"], state["exchange_events"]) == (0, 0, 0)
    assert state["CAD"] == (Decimal("1000.00"), Decimal("0"))
    return state


def test_fault_after_the_outbox_write_answers_500_and_leaves_nothing_behind(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_record = services.exchanges.record_accepted
    calls: list[uuid.UUID] = []

    def record_then_fail(conn: Connection, *args: Any, **kwargs: Any) -> Any:
        calls.append(real_record(conn, *args, **kwargs).id)
        # The hold, the exchange, the outbox row and the timeline entry are all in the transaction now.
        assert conn.execute(select(func.count()).select_from(outbox_messages)).scalar_one() == 1
        raise InjectedFault("the process died between the outbox insert and commit")

    monkeypatch.setattr(services.exchanges, "record_accepted", record_then_fail)
    # The transactional accept: PostgreSQL's one-statement accept has no moment between its writes.
    monkeypatch.setattr(services.exchanges, "_accept_at_once", lambda *args, **kwargs: None)
    before = untouched(engine, funded_account)

    response = client.post(
        "/api/exchanges",
        json={"account": str(funded_account), "from_currency": "CAD", "to_currency": "USD", "amount": "125.50"},
    )

    assert len(calls) == 1
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "An internal error occurred; nothing was changed."}
    }
    text_body = response.get_data(as_text=True)
    assert "Traceback" not in text_body
    assert "InjectedFault" not in text_body
    assert written(engine, funded_account) == before


@pytest.fixture
def outbox_insert_fails(pg_engine: Engine) -> Iterator[Engine]:
    """A BEFORE INSERT trigger on outbox_messages that raises, dropped after the test."""
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                f"""
                CREATE FUNCTION {FAULT_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'injected outbox fault';
                END $$;
                CREATE TRIGGER {FAULT_TRIGGER} BEFORE INSERT ON outbox_messages
                    FOR EACH ROW EXECUTE FUNCTION {FAULT_TRIGGER}();
                """
            )
        )
    try:
        yield pg_engine
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {FAULT_TRIGGER} ON outbox_messages"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {FAULT_TRIGGER}()"))


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_database_refusing_the_outbox_row_rolls_back_the_hold_and_the_exchange(
    outbox_insert_fails: Engine, funded_account: uuid.UUID
) -> None:
    request = ExchangeRequest(funded_account, "CAD", "USD", Decimal("125.50"))
    before = untouched(outbox_insert_fails, funded_account)

    with pytest.raises(DBAPIError, match="injected outbox fault"):
        create_exchange(outbox_insert_fails, request, queue="exchanges", idempotency_key="fault-1")

    assert written(outbox_insert_fails, funded_account) == before


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_same_key_succeeds_once_the_database_fault_is_gone(
    outbox_insert_fails: Engine, funded_account: uuid.UUID
) -> None:
    # A failed attempt must not leave the key taken: the retry is a first attempt, not a replay.
    request = ExchangeRequest(funded_account, "CAD", "USD", Decimal("125.50"))
    with pytest.raises(DBAPIError):
        create_exchange(outbox_insert_fails, request, queue="exchanges", idempotency_key="fault-2")
    with outbox_insert_fails.begin() as conn:
        conn.execute(text(f"DROP TRIGGER {FAULT_TRIGGER} ON outbox_messages"))

    accepted = create_exchange(outbox_insert_fails, request, queue="exchanges", idempotency_key="fault-2")

    assert not accepted.replayed
    state = written(outbox_insert_fails, funded_account)
    assert (state["exchanges"], state["outbox_messages"], state["exchange_events"]) == (1, 1, 1)
    assert state["CAD"] == (Decimal("874.50"), Decimal("125.50"))
