"""One exchange's timeline: what went wrong, where and how often, first; in the API and on the page."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from conftest import ApiCustomer
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from flask.testing import FlaskClient
from sqlalchemy import Engine

from outbox.publisher import BrokerPublisher
from outbox.relay import Relay
from services import timeline
from services.accounts import open_account
from services.workflow import Workflow
from tests.ops_support import credit_retrying, exchange_in
from tests.workflow_support import drive


@pytest.fixture
def account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Timeline Customer", {"CAD": Decimal("1000.00")}, customer_id=customer.id)


@pytest.fixture
def api(client: FlaskClient) -> FlaskClient:
    """The JSON API, called with the key of the customer who owns `account`."""
    return client


def credit_failing_twice(wf: Workflow, account: uuid.UUID) -> uuid.UUID:
    """A debited exchange whose credit got 503 from the bank on two attempts, and is waiting to retry."""
    return credit_retrying(wf, account, failures=2)


def trouble_box(html: str) -> str:
    match = re.search(r'<div class="trouble">(.*?)</div>', html, re.S)
    assert match is not None, "the page shows no trouble box"
    return match.group(1)


def test_the_operator_timeline_api_puts_the_failing_credit_attempt_and_the_banks_error_first(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = credit_failing_twice(wf, account)

    response = ops.get(f"/api/ops/exchanges/{exchange_id}/timeline")

    assert response.status_code == 200
    body = response.get_json()
    assert (body["state"], body["step"], body["attempt"]) == ("debited", "credit", 2)
    assert "bank answered 503" in body["last_error"]
    trouble = body["trouble"]
    assert (trouble["step"], trouble["attempt"], trouble["outcome"], trouble["state"]) == (
        "credit", 2, "retrying", "debited")
    assert trouble["error"].startswith("bank answered 503")
    assert "bank unavailable (nothing applied)" in trouble["error"]
    assert trouble["detail"] == {"outcome_unknown": False, "max_attempts": 3}
    # The trouble is the latest thing that went wrong, also found at the end of the full list.
    assert trouble == body["events"][-1]
    assert [(e["step"], e["outcome"], e["attempt"]) for e in body["events"]] == [
        ("accept", "accepted", 0), ("quote", "succeeded", 1), ("debit", "succeeded", 1),
        ("credit", "retrying", 1), ("credit", "retrying", 2)]


def test_the_exchange_page_shows_the_same_trouble_above_the_timeline(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = credit_failing_twice(wf, account)

    response = ops.get(f"/ops/exchanges/{exchange_id}")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    box = trouble_box(html)
    assert "<b>credit</b>" in box
    assert "attempt 2" in box
    assert "retrying" in box
    assert "bank answered 503" in box and "bank unavailable (nothing applied)" in box
    assert html.index('class="trouble"') < html.index("<h2>Timeline</h2>")
    table = html[html.index("<h2>Timeline</h2>"):]
    assert table.count("bank answered 503") == 2  # both attempts are listed in the timeline


def test_an_exchange_that_ran_out_of_credit_attempts_shows_the_last_failure_and_its_refund(
        api: FlaskClient, ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "refunded")

    body = ops.get(f"/api/ops/exchanges/{exchange_id}/timeline").get_json()

    assert (body["state"], body["failure_code"]) == ("refunded", "bank_unavailable")
    assert (body["trouble"]["step"], body["trouble"]["outcome"], body["trouble"]["attempt"]) == ("credit", "failed", 3)
    assert "503" in body["trouble"]["error"]
    assert body["trouble"]["detail"]["reason"] == "bank failed 3 times"
    outcomes = [(e["step"], e["outcome"]) for e in body["events"]]
    assert outcomes[-2:] == [("compensate", "compensated"), ("receipt", "sent")]
    box = trouble_box(ops.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True))
    assert "<b>credit</b>" in box and "attempt 3" in box and "failed" in box and "503" in box


def test_a_completed_exchange_has_no_trouble_and_its_page_shows_none(
        api: FlaskClient, ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "completed")

    body = ops.get(f"/api/ops/exchanges/{exchange_id}/timeline").get_json()
    html = ops.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True)

    assert body["trouble"] is None
    assert [e["outcome"] for e in body["events"]] == ["accepted", "succeeded", "succeeded", "succeeded",
                                                      "succeeded", "sent"]
    assert 'class="trouble"' not in html
    assert "completed" in html


def test_timeline_entries_carry_the_outbox_message_and_when_the_relay_published_it(
        engine: Engine, wf: Workflow, account: uuid.UUID) -> None:
    broker = StubBroker(middleware=[])
    broker.declare_queue("exchanges")
    exchange_id = exchange_in(wf, account, "pending")
    with engine.connect() as conn:
        before = timeline.load(conn, exchange_id)
    assert before[0].message_id is not None and before[0].message_published_at is None

    assert Relay(engine, BrokerPublisher(broker)).run_once().published == 1

    with engine.connect() as conn:
        accepted = timeline.load(conn, exchange_id)[0]
    assert accepted.message_published_at is not None
    published = [Message.decode(body).message_id for body in broker.queues["exchanges"].queue]
    assert published == [str(accepted.message_id)]
    broker.close()


def test_first_trouble_is_the_latest_entry_that_went_wrong(
        engine: Engine, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = credit_failing_twice(wf, account)
    assert drive(wf, exchange_id) == "completed"
    with engine.connect() as conn:
        entries = timeline.load(conn, exchange_id)

    trouble = timeline.first_trouble(entries)

    # The credit succeeded on its third attempt; its second failure is still what to read first.
    assert trouble is not None and (trouble.step, trouble.outcome, trouble.attempt) == ("credit", "retrying", 2)
    assert entries[-1].outcome == "sent"
    assert timeline.first_trouble([e for e in entries if e.outcome not in timeline.TROUBLE_OUTCOMES]) is None


def test_the_timeline_of_an_unknown_exchange_is_404(api: FlaskClient, ops: FlaskClient) -> None:
    response = api.get(f"/api/exchanges/{uuid.uuid4()}/timeline")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_exchange"
    assert ops.get(f"/ops/exchanges/{uuid.uuid4()}").status_code == 404
