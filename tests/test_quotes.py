"""Firm quotes: a customer sees the rate before committing, and an exchange that names the quote in
time gets exactly that rate, once; an expired, used, foreign or mismatched quote is refused with
nothing written."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from errors import QuoteUsed
from models import balances, quotes
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key
from services.exchanges import ExchangeRequest, create_exchange
from services.workflow import Workflow
from tests.support.portal import snapshot
from tests.support.race import all_at_once
from tests.workflow_support import drive


def ask(client: FlaskClient, amount: str = "100.00", source: str = "CAD", target: str = "USD") -> dict[str, Any]:
    response = client.post("/api/quotes", json={"from_currency": source, "to_currency": target, "amount": amount})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def exchange_on(client: FlaskClient, account: uuid.UUID, quote_id: str, key: str | None = None,
                **fields: str) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/api/exchanges", json={"account": str(account), "quote_id": quote_id, **fields},
                       headers=headers)


def expire(engine: Engine, quote_id: str) -> None:
    """Move the quote's clock past its expiry (time is the only thing rewritten)."""
    with engine.begin() as conn:
        row = conn.execute(select(quotes.c.created_at).where(quotes.c.id == uuid.UUID(quote_id))).one()
        conn.execute(update(quotes).where(quotes.c.id == uuid.UUID(quote_id))
                     .values(expires_at=row.created_at - timedelta(seconds=1)))


def usd_of(engine: Engine, account: uuid.UUID) -> Decimal:
    with engine.connect() as conn:
        return conn.execute(select(balances.c.available).where(
            balances.c.account_id == account, balances.c.currency == "USD")).scalar_one()


def test_a_quote_names_the_rate_the_amount_the_customer_gets_and_when_it_expires(client: FlaskClient) -> None:
    response = client.post("/api/quotes", json={"from_currency": "CAD", "to_currency": "USD", "amount": "125.00"})
    assert response.status_code == 201
    quote = response.get_json()
    assert response.headers["Location"] == f"/api/quotes/{quote['id']}"
    assert (quote["amount"], quote["rate"], quote["to_amount"]) == ("125.00", "0.731", "91.38")
    assert quote["status"] == "open" and quote["exchange"] is None
    from datetime import datetime
    firm = datetime.fromisoformat(quote["expires_at"]) - datetime.fromisoformat(quote["created_at"])
    assert firm == timedelta(seconds=120)  # FIRM_QUOTE_TTL_SECONDS' default
    assert client.get(response.headers["Location"]).get_json() == quote


@pytest.mark.parametrize(("body", "field", "problem"), [
    ({"from_currency": "CAD", "to_currency": "CAD", "amount": "1.00"}, "to_currency", "Must differ"),
    ({"from_currency": "CAD", "to_currency": "USD", "amount": "1.001"}, "amount", "at most 2 decimal"),
    ({"from_currency": "CAD", "to_currency": "USD", "amount": 1.5}, "amount", ""),
    ({"from_currency": "CAD", "to_currency": "XXX", "amount": "1.00"}, "to_currency", "ISO 4217"),
    ({"from_currency": "CAD", "to_currency": "USD"}, "amount", "Missing data"),
    ({"from_currency": "CAD", "to_currency": "USD", "amount": "1.00", "account": "x"}, "account", "Unknown"),
])
def test_a_bad_quote_request_is_refused_naming_the_field_and_writes_nothing(
    client: FlaskClient, engine: Engine, body: dict[str, Any], field: str, problem: str
) -> None:
    before = snapshot(engine)
    response = client.post("/api/quotes", json=body)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert problem in " ".join(error["fields"][field])
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert conn.execute(select(quotes.c.id)).first() is None


def test_an_exchange_on_a_quote_gets_its_rate_even_when_rates_move_and_the_quote_expires_before_it_runs(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, wf: Workflow
) -> None:
    quote = ask(client, "100.00")
    response = exchange_on(client, funded_account, quote["id"])  # the pair and amount come from the quote
    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()
    assert (accepted["from_currency"], accepted["to_currency"], accepted["amount"]) == ("CAD", "USD", "100.00")
    expire(engine, quote["id"])  # the queue was slow: the quote's firm period ends before the steps run
    moved = dataclasses.replace(wf, rates=TableRateProvider({**DEFAULT_USD_VALUES, "CAD": Decimal("0.5000")}))
    before = usd_of(engine, funded_account)

    assert drive(moved, uuid.UUID(accepted["id"])) == "completed"

    answer = client.get(accepted["status_url"]).get_json()
    assert (answer["rate"], answer["to_amount"], answer["quote"]) == ("0.731", "73.10", quote["id"])
    assert usd_of(engine, funded_account) - before == Decimal("73.10")
    events = client.get(accepted["status_url"] + "/timeline").get_json()["events"]
    assert "Rate fixed at 0.7310000000 USD per CAD as quoted." in [e["message"] for e in events]
    used = client.get(f"/api/quotes/{quote['id']}").get_json()
    assert (used["status"], used["exchange"]) == ("used", accepted["id"])


def test_an_expired_quote_is_refused_409_and_nothing_is_held_or_written(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    quote = ask(client)
    expire(engine, quote["id"])
    before = snapshot(engine)
    response = exchange_on(client, funded_account, quote["id"], key="late")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "quote_expired" and "quote_id" in error["fields"]
    assert snapshot(engine) == before  # the hold taken before the quote was checked rolled back with it
    assert client.get(f"/api/quotes/{quote['id']}").get_json()["status"] == "expired"


def test_a_quote_serves_one_exchange_and_a_replay_of_that_exchange_is_still_answered(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    quote = ask(client)
    first = exchange_on(client, funded_account, quote["id"], key="k-1")
    assert first.status_code == 202
    replay = exchange_on(client, funded_account, quote["id"], key="k-1")
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == first.get_json()["id"]
    before = snapshot(engine)
    again = exchange_on(client, funded_account, quote["id"], key="k-2")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "quote_used"
    assert snapshot(engine) == before


def test_another_customers_quote_is_answered_as_if_it_did_not_exist(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, app: Any
) -> None:
    other = create_customer(engine, "Someone Else")
    other_key = issue_api_key(engine, role=Role.CUSTOMER, label="other", customer_id=other)
    theirs = app.test_client().post("/api/quotes", headers={"Authorization": f"Bearer {other_key}"},
                                    json={"from_currency": "CAD", "to_currency": "USD", "amount": "100.00"})
    quote_id = theirs.get_json()["id"]
    assert client.get(f"/api/quotes/{quote_id}").status_code == 404
    for fields in ({}, {"from_currency": "CAD", "to_currency": "USD", "amount": "100.00"}):
        response = exchange_on(client, funded_account, quote_id, **fields)
        assert response.status_code == 404
        assert response.get_json()["error"] == {"code": "unknown_quote", "message": "No such quote.",
                                                "fields": {"quote_id": ["No such quote."]}}
    assert exchange_on(client, funded_account, str(uuid.uuid4())).status_code == 404


def test_an_exchange_that_does_not_match_its_quote_is_refused_naming_the_fields_and_the_quote_stays_open(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    quote = ask(client, "100.00")
    before = snapshot(engine)
    response = exchange_on(client, funded_account, quote["id"], from_currency="CAD", to_currency="EUR",
                           amount="90.00")
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"to_currency": ["Must match the quote: USD."],
                                                      "amount": ["Must match the quote: 100.00 CAD."]}
    assert snapshot(engine) == before
    assert client.get(f"/api/quotes/{quote['id']}").get_json()["status"] == "open"


def test_a_quoted_exchange_refused_for_funds_leaves_the_quote_open_for_another_try(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    quote = ask(client, "1000.01")
    response = exchange_on(client, funded_account, quote["id"])
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "insufficient_funds"
    assert client.get(f"/api/quotes/{quote['id']}").get_json()["status"] == "open"


def test_without_a_quote_the_pair_and_amount_are_required_and_a_bad_one_is_named_once(
    client: FlaskClient, funded_account: uuid.UUID
) -> None:
    missing = client.post("/api/exchanges", json={"account": str(funded_account)}).get_json()["error"]["fields"]
    assert missing == {name: ["Missing data for required field."] for name in ("from_currency", "to_currency",
                                                                               "amount")}
    bad = client.post("/api/exchanges", json={"account": str(funded_account), "from_currency": "CAD",
                                              "to_currency": "USD", "amount": "1.001"}).get_json()["error"]
    assert bad["fields"] == {"amount": ["CAD allows at most 2 decimal places."]}


def test_two_exchanges_racing_for_one_quote_make_exactly_one(pg_engine: Engine) -> None:
    from services.quotes import QuoteRequest, create_quote

    owner = create_customer(pg_engine, "Racer")
    account = open_account(pg_engine, "Racer", {"CAD": Decimal("1000.00")}, customer_id=owner)
    quote = create_quote(pg_engine, TableRateProvider(DEFAULT_USD_VALUES), owner,
                         QuoteRequest("CAD", "USD", Decimal("100.00")), ttl=timedelta(minutes=2))
    request = ExchangeRequest(account, "CAD", "USD", Decimal("100.00"), quote_id=quote.id)

    def attempt(key: str) -> Any:
        try:
            return create_exchange(pg_engine, request, queue="exchanges", idempotency_key=key, owner=owner)
        except QuoteUsed:
            return "quote_used"

    results = all_at_once([lambda n=n: attempt(f"race-{n}") for n in range(6)])
    assert sorted(map(str, results)).count("quote_used") == 5, results
    with pg_engine.connect() as conn:
        held = conn.execute(select(balances.c.held).where(balances.c.account_id == account,
                                                          balances.c.currency == "CAD")).scalar_one()
    assert held == Decimal("100.00")
