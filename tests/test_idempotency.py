"""An Idempotency-Key makes a retried POST /api/exchanges safe: one exchange, held once.

The key belongs to the account: (account, key) is unique. The same key with the same
request is a replay (same answer, nothing new written); with another request it is a
client error; two requests racing with one key still make exactly one exchange.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from models import balances, exchange_events, exchanges, ledger_entries, outbox_messages
from services.accounts import open_account
from tests.conftest import ApiCustomer
from tests.support.race import all_at_once


def exchange_body(account: uuid.UUID, amount: str = "100.00", to_currency: str = "USD") -> dict[str, str]:
    return {"account": str(account), "from_currency": "CAD", "to_currency": to_currency, "amount": amount}


def post(client: FlaskClient, body: dict[str, str], key: str) -> Any:
    return client.post("/api/exchanges", json=body, headers={"Idempotency-Key": key})


def state(engine: Engine, account: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        counts = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (exchanges, outbox_messages, exchange_events, ledger_entries)
        }
        cad = conn.execute(
            select(balances.c.available, balances.c.held).where(
                balances.c.account_id == account, balances.c.currency == "CAD"
            )
        ).one()
    return {**counts, "CAD": (cad.available, cad.held)}


def test_replay_with_the_same_key_and_body_returns_the_first_answer_and_writes_nothing(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    body = exchange_body(funded_account, "100.00")
    first = post(client, body, "order-42")
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    after_first = state(engine, funded_account)

    replays = [post(client, body, "order-42") for _ in range(3)]

    for replay in replays:
        assert replay.status_code == 202
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.get_json() == first.get_json()
        assert replay.headers["Location"] == first.headers["Location"]
    assert state(engine, funded_account) == after_first
    assert after_first["CAD"] == (Decimal("900.00"), Decimal("100.00"))
    assert (after_first["exchanges"], after_first["outbox_messages"], after_first["exchange_events"]) == (1, 1, 1)


def test_amounts_that_differ_only_in_trailing_zeros_are_the_same_request(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    first = post(client, exchange_body(funded_account, "10.0"), "trailing-zeros")
    after_first = state(engine, funded_account)

    replay = post(client, exchange_body(funded_account, "10.00"), "trailing-zeros")
    again = post(client, exchange_body(funded_account, "10"), "trailing-zeros")

    assert first.status_code == replay.status_code == again.status_code == 202
    assert first.get_json()["id"] == replay.get_json()["id"] == again.get_json()["id"]
    assert replay.headers["Idempotent-Replayed"] == again.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["amount"] == "10.00"
    assert state(engine, funded_account) == after_first
    assert after_first["CAD"] == (Decimal("990.00"), Decimal("10.00"))


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": "100.01"},
        {"to_currency": "EUR"},
    ],
    ids=["other-amount", "other-target-currency"],
)
def test_same_key_with_another_body_is_refused_and_writes_nothing(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, changed: dict[str, str]
) -> None:
    body = exchange_body(funded_account, "100.00")
    assert post(client, body, "reused").status_code == 202
    after_first = state(engine, funded_account)

    response = post(client, {**body, **changed}, "reused")

    assert response.status_code == 422
    assert "Idempotent-Replayed" not in response.headers
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in error["fields"]
    assert state(engine, funded_account) == after_first


def test_the_same_key_on_two_accounts_makes_two_independent_exchanges(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, customer: ApiCustomer
) -> None:
    other = open_account(engine, "Second Account", {"CAD": Decimal("500.00")}, customer_id=customer.id)

    mine = post(client, exchange_body(funded_account, "100.00"), "shared-key")
    theirs = post(client, exchange_body(other, "200.00"), "shared-key")

    assert mine.status_code == theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert state(engine, funded_account)["CAD"] == (Decimal("900.00"), Decimal("100.00"))
    assert state(engine, other)["CAD"] == (Decimal("300.00"), Decimal("200.00"))
    assert state(engine, other)["exchanges"] == 2


def test_a_request_without_a_key_is_never_a_replay(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    body = exchange_body(funded_account, "100.00")
    first, second = client.post("/api/exchanges", json=body), client.post("/api/exchanges", json=body)

    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] != second.get_json()["id"]
    assert state(engine, funded_account)["CAD"] == (Decimal("800.00"), Decimal("200.00"))


def test_a_refused_request_does_not_use_up_its_key(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    refused = post(client, exchange_body(funded_account, "5000.00"), "retry-me")
    accepted = post(client, exchange_body(funded_account, "100.00"), "retry-me")

    assert refused.status_code == 409
    assert accepted.status_code == 202
    assert "Idempotent-Replayed" not in accepted.headers


def race(app: Flask, requests: list[tuple[dict[str, str], str]], customer: ApiCustomer) -> list[Any]:
    """Send each (body, key) from its own thread and test client, all released at once."""

    def sender(body: dict[str, str], key: str) -> Callable[[], Any]:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = customer.headers["Authorization"]

        def send() -> Any:
            response = post(client, body, key)
            return response.status_code, response.get_json(), dict(response.headers)

        return send

    return all_at_once([sender(body, key) for body, key in requests])


# 600.00 of 1000.00: after the winner's hold, the rest of the balance could not pay for a
# second one, so a loser that waited on the balance lock must still answer with a replay,
# not with insufficient funds.
RACE_AMOUNT = "600.00"


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "amount",
    # 100.00: a loser that waited for the lock can hold it too, and meets the winner at the
    # unique (account, key) constraint. 600.00: the loser finds the money already held.
    ["100.00", RACE_AMOUNT],
    ids=["losers-hit-the-unique-key", "losers-find-the-money-held"],
)
def test_twenty_racing_requests_with_one_key_make_exactly_one_exchange(
    app: Flask, pg_engine: Engine, funded_account: uuid.UUID, amount: str
, customer: ApiCustomer) -> None:
    body = exchange_body(funded_account, amount)

    answers = race(app, [(body, "race-key")] * 20, customer)

    assert [status for status, _, _ in answers] == [202] * 20, [a[1] for a in answers if a[0] != 202]
    assert len({payload["id"] for _, payload, _ in answers}) == 1
    assert sum(headers.get("Idempotent-Replayed") == "true" for _, _, headers in answers) == 19
    after = state(pg_engine, funded_account)
    assert (after["exchanges"], after["outbox_messages"], after["exchange_events"]) == (1, 1, 1)
    assert after["CAD"] == (Decimal("1000.00") - Decimal(amount), Decimal(amount))


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_racing_requests_with_one_key_and_two_bodies_let_exactly_one_body_win(
    app: Flask, pg_engine: Engine, funded_account: uuid.UUID
, customer: ApiCustomer) -> None:
    bodies = [exchange_body(funded_account, RACE_AMOUNT), exchange_body(funded_account, "700.00")]
    requests = [(bodies[i % 2], "contested-key") for i in range(20)]

    answers = race(app, requests, customer)

    winners = [(body, payload) for (body, _), (status, payload, headers) in zip(requests, answers, strict=True)
               if status == 202 and "Idempotent-Replayed" not in headers]
    assert len(winners) == 1
    winning_body, winner = winners[0]
    for (body, _), (status, payload, _) in zip(requests, answers, strict=True):
        if body == winning_body:
            assert status == 202
            assert payload["id"] == winner["id"]
        else:
            assert status == 422
            assert payload["error"]["code"] == "idempotency_key_reused"
            assert "Idempotency-Key" in payload["error"]["fields"]
    after = state(pg_engine, funded_account)
    assert (after["exchanges"], after["outbox_messages"], after["exchange_events"]) == (1, 1, 1)
    amount = Decimal(winning_body["amount"])
    assert after["CAD"] == (Decimal("1000.00") - amount, amount)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_ten_racing_requests_with_one_key_make_exactly_one_exchange_on_sqlite(
    app: Flask, sqlite_engine: Engine, funded_account: uuid.UUID
, customer: ApiCustomer) -> None:
    answers = race(app, [(exchange_body(funded_account, RACE_AMOUNT), "race-key")] * 10, customer)

    assert [status for status, _, _ in answers] == [202] * 10
    assert len({payload["id"] for _, payload, _ in answers}) == 1
    after = state(sqlite_engine, funded_account)
    assert (after["exchanges"], after["outbox_messages"], after["exchange_events"]) == (1, 1, 1)
    assert after["CAD"] == (Decimal("400.00"), Decimal("600.00"))
