"""What a customer is told, off the happy path too: plain words, a reason for every refund or failure,
and nothing of our internals (workers, hosts, ports, error texts, operators' names)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from conftest import ApiCustomer
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, update

from domain import customer_view
from domain import states as machine
from domain.states import ExchangeState
from models import exchanges
from models.base import utcnow
from ops.actions import cancel
from services import timeline
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key
from services.workflow import Workflow
from tests.ops_support import credit_retrying, exchange_in

OPERATOR = "alice-the-operator"


@pytest.fixture
def account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Truthful Customer", {"CAD": Decimal("5000.00")}, customer_id=customer.id)


def delayed(wf: Workflow, account: uuid.UUID) -> uuid.UUID:
    """Debited; the bank answered 503 to the credit once, and a retry is due."""
    return credit_retrying(wf, account)


def cancelled(wf: Workflow, account: uuid.UUID) -> uuid.UUID:
    exchange_id = exchange_in(wf, account, "pending")
    cancel(wf.engine, exchange_id, OPERATOR, queue="exchanges")
    return exchange_id


# --- the exchange's answer -----------------------------------------------------------------


@pytest.mark.parametrize(("make", "status", "final", "reason"), [
    (lambda wf, a: exchange_in(wf, a, "completed"), "completed", True, None),
    (delayed, "delayed", False, None),
    (lambda wf, a: exchange_in(wf, a, "needs_attention"), "under_review", True, None),
    (lambda wf, a: exchange_in(wf, a, "refunded"), "refunded", True,
     customer_view.FAILURE_REASONS["bank_unavailable"]),
    (lambda wf, a: exchange_in(wf, a, "failed"), "failed", True, customer_view.FAILURE_REASONS["no_rate"]),
    (cancelled, "failed", True, customer_view.FAILURE_REASONS["cancelled_by_support"]),
])
def test_every_way_an_exchange_can_stand_is_said_in_plain_words(
        client: FlaskClient, wf: Workflow, account: uuid.UUID, make, status: str, final: bool,
        reason: str | None) -> None:
    exchange_id = make(wf, account)
    body = client.get(f"/api/exchanges/{exchange_id}").get_json()
    assert (body["status"], body["final"], body["failure_reason"]) == (status, final, reason)
    assert body["status_message"]
    assert "last_error" not in body


def test_a_delayed_exchange_says_the_money_is_held_not_lost(
        client: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    body = client.get(f"/api/exchanges/{delayed(wf, account)}").get_json()
    assert body["state"] == "debited"
    assert "retrying" in body["status_message"] and "held, not lost" in body["status_message"]


def test_a_refund_keeps_its_reason_after_the_refund_step_ran(
        client: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "refunded")
    body = client.get(f"/api/exchanges/{exchange_id}/timeline").get_json()
    assert body["failure_reason"] == customer_view.FAILURE_REASONS["bank_unavailable"]
    assert [e["event"] for e in body["events"]] == ["accepted", "rate_fixed", "debited", "delayed", "refunded"]
    assert body["events"][-1]["message"].startswith("100.00 CAD returned to your balance.")


# --- the customer's timeline ---------------------------------------------------------------


def test_the_customer_timeline_names_no_worker_host_port_error_or_operator(
        client: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    made = [delayed(wf, account), cancelled(wf, account), exchange_in(wf, account, "needs_attention"),
            exchange_in(wf, account, "refunded"), exchange_in(wf, account, "completed")]
    bank = urlsplit(wf.bank.base_url)
    # Whole phrases, not bare numbers: "503" can occur in a uuid or a timestamp's microseconds.
    secrets = {OPERATOR, bank.netloc, "127.0.0.1", "bank answered", "answered 503"}
    with wf.engine.connect() as conn:
        for exchange_id in made:
            for entry in timeline.load(conn, exchange_id):
                secrets |= {entry.worker} if entry.worker else set()
                secrets |= {entry.error[:40]} if entry.error else set()
    assert any("dead-worker" in s for s in secrets) and len(secrets) > 8  # the internals are there to leak

    for exchange_id in made:
        for path in (f"/api/exchanges/{exchange_id}", f"/api/exchanges/{exchange_id}/timeline"):
            text = json.dumps(client.get(path).get_json())
            leaked = [s for s in secrets if s in text]
            assert leaked == [], (path, leaked)


def test_an_operator_still_sees_the_full_timeline_with_workers_and_errors(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    body = ops.get(f"/api/ops/exchanges/{delayed(wf, account)}/timeline").get_json()
    assert body["trouble"]["error"].startswith("bank answered 503")
    assert all(e["worker"] for e in body["events"] if e["step"] != "accept")


# --- listing -------------------------------------------------------------------------------


def test_listing_pages_newest_first_with_a_cursor_and_never_shows_another_customers_exchange(
        client: FlaskClient, wf: Workflow, account: uuid.UUID, engine: Engine) -> None:
    mine = [exchange_in(wf, account, "pending", amount=f"{n}.00") for n in range(1, 6)]
    other = create_customer(engine, "Someone Else", email="else@example.com", password="else-password")
    theirs = exchange_in(wf, open_account(engine, "Else", {"CAD": Decimal("100")}, customer_id=other), "pending")

    first = client.get("/api/exchanges?limit=2").get_json()
    second = client.get(f"/api/exchanges?limit=2&cursor={first['next_cursor']}").get_json()
    third = client.get(f"/api/exchanges?limit=2&cursor={second['next_cursor']}").get_json()

    seen = [e["id"] for page in (first, second, third) for e in page["data"]]
    assert seen == [str(i) for i in reversed(mine)]
    assert third["next_cursor"] is None
    assert str(theirs) not in seen
    assert first["data"][0]["status"] == "processing" and "last_error" not in first["data"][0]


def test_listing_filters_by_state_and_creation_time(
        client: FlaskClient, wf: Workflow, account: uuid.UUID, engine: Engine) -> None:
    done = exchange_in(wf, account, "completed")
    refunded = exchange_in(wf, account, "refunded")
    old = exchange_in(wf, account, "pending")
    with engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == old).values(created_at=utcnow() - timedelta(days=3)))

    by_state = client.get("/api/exchanges?state=completed&state=refunded").get_json()["data"]
    assert {e["id"] for e in by_state} == {str(done), str(refunded)}
    since = (utcnow() - timedelta(days=1)).isoformat()
    recent = client.get("/api/exchanges", query_string={"created_after": since}).get_json()["data"]
    assert str(old) not in {e["id"] for e in recent} and len(recent) == 2
    before = client.get("/api/exchanges", query_string={"created_before": since}).get_json()["data"]
    assert [e["id"] for e in before] == [str(old)]


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=many", "limit"), ("state=lost", "state"),
    ("created_after=yesterday", "created_after"), ("cursor=not-a-cursor", "cursor"), ("colour=red", "colour"),
])
def test_a_bad_listing_query_is_a_422_naming_the_parameter(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/api/exchanges?{query}")
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_listing_needs_an_api_key(app: Flask, engine: Engine) -> None:
    assert app.test_client().get("/api/exchanges").status_code == 401
    operator_key = issue_api_key(engine, role=Role.OPERATOR, label="ops")
    answer = app.test_client().get("/api/exchanges", headers={"Authorization": f"Bearer {operator_key}"})
    assert answer.status_code in (401, 403)


# --- the rules, without I/O ----------------------------------------------------------------


@pytest.mark.parametrize("state", list(ExchangeState))
@pytest.mark.parametrize("code", [None, *customer_view.FAILURE_REASONS, "a-code-from-the-future"])
def test_every_state_has_a_view_and_every_refund_or_failure_a_reason(state: ExchangeState, code: str | None) -> None:
    view = customer_view.describe(state, failure_code=code, retrying=False, from_currency="CAD", to_currency="USD")
    assert view.message
    if state in (ExchangeState.REFUNDED, ExchangeState.FAILED):
        assert view.failure_reason
    assert view.final == (state in (*machine.TERMINAL_STATES, ExchangeState.NEEDS_ATTENTION))
