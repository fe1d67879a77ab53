"""Recovery actions: retry, cancel and force compensation, allowed and refused, as functions and over HTTP.

Every allowed action writes exactly one outbox message and one timeline event naming the
operator; every refused one writes nothing and says why.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from conftest import settings_for
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from app import create_app
from domain import states as machine
from errors import UnknownExchange
from harness import invariants
from models import balances
from ops.actions import ActionRefused, cancel, force_compensation, retry_step
from services.accounts import open_account
from services.credentials import Role, issue_api_key
from services.workflow import STEPS, Delivery, StepDeferred, StepResult, Workflow, credit_key
from tests.ops_support import (
    CLOSED_STATES,
    OPEN_STATES,
    events,
    exchange_in,
    messages_for,
    row_of,
)
from tests.workflow_support import drive, run_step, state_of

QUEUE = "exchanges"
ALL_STATES = OPEN_STATES + CLOSED_STATES


@pytest.fixture
def account(engine: Engine) -> uuid.UUID:
    return open_account(engine, "Operations Customer", {"CAD": Decimal("1000.00")})


def app_with(engine: Engine, wf: Workflow, **overrides: object) -> Flask:
    application = create_app(settings_for(engine, **overrides))
    application.extensions["fx.engine"].dispose()
    application.extensions["fx.engine"] = engine
    application.extensions["fx.bank"] = wf.bank
    return application


def balance(engine: Engine, account: uuid.UUID, currency: str = "CAD") -> tuple[Decimal, Decimal]:
    with engine.connect() as conn:
        row = conn.execute(select(balances.c.available, balances.c.held).where(
            balances.c.account_id == account, balances.c.currency == currency)).one()
    return row.available, row.held


class Snapshot:
    """The exchange's outbox messages and timeline events, to see what an action wrote."""

    def __init__(self, engine: Engine, exchange_id: uuid.UUID) -> None:
        self.engine, self.exchange_id = engine, exchange_id
        self.messages = messages_for(engine, exchange_id)
        self.events = events(engine, exchange_id)
        self.state = state_of(engine, exchange_id)

    def new_messages(self) -> list:
        return messages_for(self.engine, self.exchange_id)[len(self.messages):]

    def new_events(self) -> list:
        return events(self.engine, self.exchange_id)[len(self.events):]

    def assert_nothing_written(self) -> None:
        assert self.new_messages() == []
        assert self.new_events() == []
        assert state_of(self.engine, self.exchange_id) == self.state


def assert_one_message_and_operator_event(before: Snapshot, *, actor: str, outcome: str, operator: str) -> None:
    (message,) = before.new_messages()
    (event,) = before.new_events()
    # The message names the exchange, in its current step epoch (a retry raises it: older ones are superseded).
    epoch = row_of(before.engine, before.exchange_id).step_epoch
    assert message.actor == actor and message.payload == machine.step_payload(before.exchange_id, epoch)
    assert (epoch > 0) == (outcome == "retry_requested")
    assert message.published_at is None and message.queue == QUEUE
    assert (event.step, event.outcome, event.worker) == ("operator", outcome, f"operator:{operator}")
    assert event.detail["operator"] == operator


def deliver(wf: Workflow, message: object, worker: str = "test-worker") -> StepResult:
    """Run an outbox message's step as the worker receiving it would."""
    exchange_id = uuid.UUID(message.payload["exchange_id"])  # type: ignore[attr-defined]
    # The payload is the actor's kwargs, as a broker delivers them.
    epoch = message.payload.get("epoch", 0)  # type: ignore[attr-defined]
    return STEPS[message.actor](wf, Delivery(exchange_id, worker, message.id, epoch))  # type: ignore[attr-defined]


def assert_invariants(wf: Workflow) -> None:
    report = invariants.check(wf.engine, bank=wf.bank, settled=False)
    assert report.ok, str(report)


# --- retry -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", OPEN_STATES)
def test_retry_is_allowed_in_every_open_state_and_sends_that_states_step_again(
        wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    before = Snapshot(wf.engine, exchange_id)

    result = retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)

    actor = machine.STEP_FOR_STATE[machine.ExchangeState(state)].actor
    assert result == f"{actor} sent again"
    assert_one_message_and_operator_event(before, actor=actor, outcome="retry_requested", operator="alice")
    (message,), (event,) = before.new_messages(), before.new_events()
    assert event.detail == {"operator": "alice", "actor": actor, "message_id": str(message.id)}
    exchange = row_of(wf.engine, exchange_id)
    assert exchange.state == state and exchange.attempt == 0  # a fresh attempt budget


@pytest.mark.parametrize("state", CLOSED_STATES)
def test_retry_is_refused_on_a_closed_exchange(wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    before = Snapshot(wf.engine, exchange_id)

    with pytest.raises(ActionRefused, match=f"A {state} exchange has no step to retry"):
        retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)

    before.assert_nothing_written()


def test_a_retried_credit_that_exhausted_its_attempts_gets_a_fresh_budget_and_completes(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    wf.bank.set_faults(error_next=2)
    for _ in range(2):
        with pytest.raises(StepDeferred, match="credit attempt"):
            run_step(wf, machine.CREDIT.actor, exchange_id)
    assert row_of(wf.engine, exchange_id).attempt == 2
    before = Snapshot(wf.engine, exchange_id)

    retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)
    (message,) = before.new_messages()

    assert deliver(wf, message) is StepResult.ADVANCED
    credit = [e for e in events(wf.engine, exchange_id) if e.step == "credit"][-1]
    assert (credit.outcome, credit.attempt, credit.message_id) == ("succeeded", 1, message.id)
    assert drive(wf, exchange_id) == "completed"
    assert_invariants(wf)


def test_a_retried_parked_exchange_is_resolved_with_the_bank(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "needs_attention")
    before = Snapshot(wf.engine, exchange_id)

    retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)
    (message,) = before.new_messages()

    assert message.actor == machine.RESOLVE.actor
    assert deliver(wf, message) is StepResult.ADVANCED
    # The bank never saw the credit: it is voided there, and the debit is refunded.
    assert wf.bank.lookup(credit_key(exchange_id)).status == "voided"  # type: ignore[union-attr]
    assert drive(wf, exchange_id) == "refunded"
    assert balance(wf.engine, account) == (Decimal("1000.00"), Decimal("0"))
    assert_invariants(wf)


# --- cancel ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "quoted"])
def test_cancel_before_the_debit_releases_the_hold_fails_the_exchange_and_queues_its_receipt(
        wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state, amount="250.00")
    assert balance(wf.engine, account) == (Decimal("750.00"), Decimal("250.00"))
    before = Snapshot(wf.engine, exchange_id)
    in_flight = before.messages[-1]  # the step message sent before the operator stepped in

    assert cancel(wf.engine, exchange_id, "alice", queue=QUEUE) == "cancelled; the hold was released"

    assert balance(wf.engine, account) == (Decimal("1000.00"), Decimal("0"))
    exchange = row_of(wf.engine, exchange_id)
    assert exchange.state == "failed" and exchange.last_error == "cancelled by operator alice"
    assert exchange.claimed_by is None
    assert_one_message_and_operator_event(before, actor=machine.RECEIPT.actor, outcome="cancelled",
                                          operator="alice")
    detail = before.new_events()[0].detail
    assert detail["operator"] == "alice" and Decimal(detail["released"]) == Decimal("250.00")
    # The step message already on its way finds the exchange gone from its state, and does nothing.
    assert deliver(wf, in_flight) is StepResult.SKIPPED
    assert deliver(wf, before.new_messages()[0]) is StepResult.ADVANCED  # the receipt
    assert row_of(wf.engine, exchange_id).receipt_sent_at is not None
    assert_invariants(wf)


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s not in ("pending", "quoted")])
def test_cancel_is_refused_from_the_debit_on(wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    before = Snapshot(wf.engine, exchange_id)
    money = balance(wf.engine, account)

    with pytest.raises(ActionRefused, match=f"Only pending or quoted exchanges can be cancelled; this one is {state}"):
        cancel(wf.engine, exchange_id, "alice", queue=QUEUE)

    before.assert_nothing_written()
    assert balance(wf.engine, account) == money


# --- force compensation ------------------------------------------------------------------


@pytest.mark.parametrize("state", ["debited", "needs_attention"])
def test_force_compensation_voids_the_credit_at_the_bank_then_refunds(
        wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state, amount="300.00")
    before = Snapshot(wf.engine, exchange_id)

    result = force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue=QUEUE)

    assert result == "compensation started; the bank voided the credit"
    void = wf.bank.lookup(credit_key(exchange_id))
    assert void is not None and void.status == "voided"
    exchange = row_of(wf.engine, exchange_id)
    assert exchange.state == "compensating"
    assert exchange.last_error == "compensation forced by operator alice"
    assert_one_message_and_operator_event(before, actor=machine.COMPENSATE.actor,
                                          outcome="compensation_forced", operator="alice")
    assert before.new_events()[0].detail == {"operator": "alice", "void_id": void.id}

    (message,) = before.new_messages()
    assert deliver(wf, message) is StepResult.ADVANCED
    assert state_of(wf.engine, exchange_id) == "refunded"
    assert balance(wf.engine, account) == (Decimal("1000.00"), Decimal("0"))
    # A credit message still on its way cannot pay any more: the step skips, the bank refuses the key.
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.SKIPPED
    assert wf.bank.all_applied() == []
    assert drive(wf, exchange_id) == "refunded"
    assert_invariants(wf)


@pytest.mark.parametrize("state", ["debited", "needs_attention"])
def test_force_compensation_is_refused_when_the_bank_has_paid_the_credit(
        wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    exchange = row_of(wf.engine, exchange_id)
    # The worker's bank call went through; its answer was lost with the worker.
    paid = wf.bank.transfer(key=credit_key(exchange_id), reference=str(exchange_id),
                            account=str(account), currency="USD", amount=exchange.to_amount)
    before = Snapshot(wf.engine, exchange_id)

    with pytest.raises(ActionRefused, match=f"The bank has paid this exchange \\(transfer {paid.id}\\)"):
        force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue=QUEUE)

    before.assert_nothing_written()
    # What the refusal advises: retrying records the credit the bank made, once.
    retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)
    assert deliver(wf, before.new_messages()[0]) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert_invariants(wf)


def test_force_compensation_is_refused_while_the_bank_cannot_answer(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    before = Snapshot(wf.engine, exchange_id)
    wf.bank.set_faults(down=True)

    with pytest.raises(ActionRefused, match="The bank cannot confirm the credit was never paid"):
        force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue=QUEUE)

    wf.bank.reset_faults()
    before.assert_nothing_written()
    assert wf.bank.lookup(credit_key(exchange_id)) is None


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s not in ("debited", "needs_attention")])
def test_force_compensation_is_refused_in_other_states(wf: Workflow, account: uuid.UUID, state: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    bank_before = wf.bank.lookup(credit_key(exchange_id))
    before = Snapshot(wf.engine, exchange_id)

    refusal = f"Only debited or parked exchanges can be compensated; this one is {state}"
    with pytest.raises(ActionRefused, match=refusal):
        force_compensation(wf.engine, wf.bank, exchange_id, "alice", queue=QUEUE)

    before.assert_nothing_written()
    assert wf.bank.lookup(credit_key(exchange_id)) == bank_before  # the bank was not asked to void


@pytest.mark.parametrize("action", ["retry", "cancel", "compensate"])
def test_an_action_on_an_unknown_exchange_is_refused_as_unknown(wf: Workflow, action: str) -> None:
    calls = {
        "retry": lambda: retry_step(wf.engine, uuid.uuid4(), "alice", queue=QUEUE),
        "cancel": lambda: cancel(wf.engine, uuid.uuid4(), "alice", queue=QUEUE),
        "compensate": lambda: force_compensation(wf.engine, wf.bank, uuid.uuid4(), "alice", queue=QUEUE),
    }
    with pytest.raises(UnknownExchange):
        calls[action]()


# --- the JSON API ------------------------------------------------------------------------


def action_url(exchange_id: uuid.UUID, action: str) -> str:
    return f"/api/ops/exchanges/{exchange_id}/actions/{action}"


@pytest.mark.parametrize(("state", "action", "actor", "outcome", "result"), [
    ("debited", "retry", machine.CREDIT.actor, "retry_requested", "credit_exchange sent again"),
    ("quoted", "cancel", machine.RECEIPT.actor, "cancelled", "cancelled; the hold was released"),
    ("needs_attention", "compensate", machine.COMPENSATE.actor, "compensation_forced",
     "compensation started; the bank voided the credit"),
])
def test_the_action_api_accepts_an_allowed_action_and_names_the_operator(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID, state: str, action: str, actor: str, outcome: str,
        result: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(action_url(exchange_id, action))

    assert response.status_code == 202
    assert response.get_json() == {"exchange_id": str(exchange_id), "action": action, "result": result,
                                   "operator": "local-operator"}
    assert_one_message_and_operator_event(before, actor=actor, outcome=outcome, operator="local-operator")


@pytest.mark.parametrize(("state", "action", "message"), [
    ("completed", "retry", "A completed exchange has no step to retry."),
    ("debited", "cancel", "Only pending or quoted exchanges can be cancelled; this one is debited."),
    ("refunded", "compensate", "Only debited or parked exchanges can be compensated; this one is refunded."),
])
def test_the_action_api_answers_409_action_refused_and_writes_nothing(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID, state: str, action: str, message: str) -> None:
    exchange_id = exchange_in(wf, account, state)
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(action_url(exchange_id, action))

    assert response.status_code == 409
    assert response.get_json() == {"error": {"code": "action_refused", "message": message}}
    before.assert_nothing_written()


def test_the_action_api_refuses_compensation_the_bank_has_paid(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    wf.bank.transfer(key=credit_key(exchange_id), reference=str(exchange_id), account=str(account),
                     currency="USD", amount=row_of(wf.engine, exchange_id).to_amount)
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(action_url(exchange_id, "compensate"))

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "action_refused"
    assert "The bank has paid this exchange" in response.get_json()["error"]["message"]
    before.assert_nothing_written()


def test_the_action_api_answers_404_for_an_unknown_exchange_or_action(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    assert ops.post(action_url(uuid.uuid4(), "retry")).status_code == 404
    exchange_id = exchange_in(wf, account, "pending")
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(action_url(exchange_id, "teleport"))

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_action"
    assert "use one of retry, cancel, compensate" in response.get_json()["error"]["message"]
    before.assert_nothing_written()


# --- the HTML forms ----------------------------------------------------------------------


def csrf_token_of(client: FlaskClient, exchange_id: uuid.UUID) -> str:
    html = client.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, "the page has no CSRF token"
    return match.group(1)


def form_url(exchange_id: uuid.UUID, action: str) -> str:
    return f"/ops/exchanges/{exchange_id}/actions/{action}"


def test_a_form_action_with_the_csrf_token_runs_and_flashes_its_result(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    token = csrf_token_of(ops, exchange_id)
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(form_url(exchange_id, "cancel"), data={"csrf_token": token})

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/ops/exchanges/{exchange_id}")
    page = ops.get(response.headers["Location"]).get_data(as_text=True)
    assert '<p class="flash-ok">cancelled; the hold was released</p>' in page
    assert state_of(wf.engine, exchange_id) == "failed"
    assert_one_message_and_operator_event(before, actor=machine.RECEIPT.actor, outcome="cancelled",
                                          operator="local-operator")
    assert "operator:local-operator" in page  # the timeline names who did it


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_form_action_without_the_right_csrf_token_is_refused_with_400(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID, token: str | None) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    csrf_token_of(ops, exchange_id)  # the session has a token; the form does not send it
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(form_url(exchange_id, "cancel"), data={} if token is None else {"csrf_token": token})

    assert response.status_code == 400
    assert "CSRF token is missing or wrong" in response.get_json()["error"]["message"]
    before.assert_nothing_written()


def test_a_form_action_without_a_session_is_refused_with_400(wf: Workflow, app: Flask, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    before = Snapshot(wf.engine, exchange_id)

    response = app.test_client().post(form_url(exchange_id, "retry"), data={"csrf_token": ""})

    assert response.status_code == 400
    before.assert_nothing_written()


def test_a_refused_form_action_flashes_why_and_changes_nothing(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "completed")
    token = csrf_token_of(ops, exchange_id)
    before = Snapshot(wf.engine, exchange_id)

    response = ops.post(form_url(exchange_id, "compensate"), data={"csrf_token": token}, follow_redirects=True)

    assert response.status_code == 200
    assert ('<p class="flash-refused">Only debited or parked exchanges can be compensated; this one is completed.</p>'
            in response.get_data(as_text=True))
    before.assert_nothing_written()


# --- operators ---------------------------------------------------------------------------


OPERATOR_PAGES = ["/ops/", "/ops/exchanges/{id}", "/metrics"]


@pytest.mark.parametrize("path", OPERATOR_PAGES)
@pytest.mark.parametrize("auth", [None, ("alice", "wrong"), ("mallory", "pw"), ("alice", "")])
def test_operator_pages_answer_401_without_the_right_credentials(
        engine: Engine, wf: Workflow, account: uuid.UUID, path: str, auth: tuple[str, str] | None) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    client = app_with(engine, wf, operators="alice:pw").test_client()

    response = client.get(path.format(id=exchange_id), auth=auth)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert response.get_json() == {"error": {"code": "unauthorized", "message": "Operator sign-in required."}}


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_operator_pages_open_to_a_signed_in_operator(
        engine: Engine, wf: Workflow, account: uuid.UUID, path: str) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    client = app_with(engine, wf, operators="bob:secret,alice:pw").test_client()

    response = client.get(path.format(id=exchange_id), auth=("alice", "pw"))

    assert response.status_code == 200
    if path.startswith("/ops"):
        assert "<span>alice</span>" in response.get_data(as_text=True)


@pytest.mark.parametrize("auth", [None, ("alice", "nope")])
def test_the_action_api_answers_401_to_an_unknown_operator_and_writes_nothing(
        engine: Engine, wf: Workflow, account: uuid.UUID, auth: tuple[str, str] | None) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    client = app_with(engine, wf, operators="alice:pw").test_client()
    before = Snapshot(wf.engine, exchange_id)

    response = client.post(action_url(exchange_id, "retry"), auth=auth)

    assert response.status_code == 401
    before.assert_nothing_written()


def test_the_action_api_records_the_signed_in_operator(engine: Engine, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    client = app_with(engine, wf, operators="alice:pw").test_client()
    before = Snapshot(wf.engine, exchange_id)

    response = client.post(action_url(exchange_id, "retry"), auth=("alice", "pw"))

    assert response.status_code == 202 and response.get_json()["operator"] == "alice"
    assert_one_message_and_operator_event(before, actor=machine.CREDIT.actor, outcome="retry_requested",
                                          operator="alice")


def test_an_operator_api_keys_action_names_the_keys_operator(engine: Engine, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    key = issue_api_key(engine, role=Role.OPERATOR, label="carol")
    client = app_with(engine, wf, operators="alice:pw").test_client()
    before = Snapshot(wf.engine, exchange_id)

    response = client.post(action_url(exchange_id, "retry"), headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 202 and response.get_json()["operator"] == "carol"
    assert_one_message_and_operator_event(before, actor=machine.CREDIT.actor, outcome="retry_requested",
                                          operator="carol")


def test_a_signed_in_operators_form_action_names_them(engine: Engine, wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "quoted")
    client = app_with(engine, wf, operators="alice:pw").test_client()
    html = client.get(f"/ops/exchanges/{exchange_id}", auth=("alice", "pw")).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    before = Snapshot(wf.engine, exchange_id)

    response = client.post(form_url(exchange_id, "retry"), data={"csrf_token": token}, auth=("alice", "pw"))

    assert response.status_code == 302
    assert_one_message_and_operator_event(before, actor=machine.DEBIT.actor, outcome="retry_requested",
                                          operator="alice")


def test_production_without_operators_keeps_the_pages_closed(engine: Engine, wf: Workflow) -> None:
    client = app_with(engine, wf, environment="production").test_client()

    assert client.get("/ops/").status_code == 401
    assert client.get("/ops/", auth=("local-operator", "")).status_code == 401
    assert client.post(action_url(uuid.uuid4(), "retry")).status_code == 401


def test_outside_production_without_operators_the_pages_are_open_to_the_local_operator(ops: FlaskClient) -> None:
    response = ops.get("/ops/")
    assert response.status_code == 200
    assert "<span>local-operator</span>" in response.get_data(as_text=True)
