"""What operators see is true: the stuck clock, a comparison that could not run, findings that
resolve, live processes, alerts for a person, and every failure on the timeline.

In-process, on both backends, against the real bank service; time is moved by rewriting
timestamps, never by sleeping.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from dramatiq.brokers.stub import StubBroker
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from domain import states as machine
from jobs.actors import declare_actors
from models import exchanges, process_heartbeats, reconciliation_findings
from models.base import utcnow
from ops import actions, findings
from ops.processes import Heartbeat, ProcessRole
from ops.reconciler import EXIT_MISMATCH, EXIT_UNKNOWN, reconcile_once, requeue_stuck
from outbox import failpoints
from services.accounts import open_account
from services.exchanges import ExchangeRequest, create_exchange
from services.workflow import StepDeferred, Workflow
from settings import Settings
from tests.conftest import ApiCustomer
from tests.ops_support import age, bank_for, events, exchange_in, fail_credit_for_good, row_of
from tests.support.metrics import metric
from tests.support.sentry_capture import CollectingTransport
from tests.workflow_support import drive, run_step

QUEUE = "exchanges"
STUCK_AFTER = timedelta(minutes=2)
LONG_AGO = timedelta(minutes=10)
UNREACHABLE_BANK_URL = "http://127.0.0.1:1"


@pytest.fixture
def account(engine: Engine) -> uuid.UUID:
    return open_account(engine, "Operated Customer", {"CAD": Decimal("1000.00")})



# --- the stuck clock --------------------------------------------------------------------------


def test_a_re_send_does_not_restart_the_stuck_clock(wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    exchange_id = exchange_in(wf, account, "quoted")
    age(wf.engine, exchange_id, LONG_AGO)
    progressed = row_of(wf.engine, exchange_id).progressed_at

    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE) == [
        (exchange_id, "quoted", machine.DEBIT.actor)]

    assert row_of(wf.engine, exchange_id).progressed_at == progressed
    html = ops.get("/ops/").get_data(as_text=True)
    section = html[html.index("<h2>Stuck"):html.index("<h2>Needs attention")]
    assert str(exchange_id) in section and progressed.strftime("%Y-%m-%d %H:%M:%S") in section


def test_fx_exchanges_stuck_counts_by_state_and_a_step_outcome_takes_the_exchange_out(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    ops.application.extensions["fx.settings"] = Settings(database_url="sqlite://", stuck_after_seconds=120)
    quoted = exchange_in(wf, account, "quoted")
    age(wf.engine, quoted, LONG_AGO)
    requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE)

    assert metric(ops, "fx_exchanges_stuck", state="quoted") == 1
    assert metric(ops, "fx_exchanges_stuck", state="pending") == 0
    run_step(wf, machine.DEBIT.actor, quoted)  # a step moves it: progress
    assert metric(ops, "fx_exchanges_stuck", state="quoted") == 0
    assert metric(ops, "fx_exchanges_stuck", state="debited") == 0


# --- the reconciler's comparison ---------------------------------------------------------------


def test_reconcile_once_with_the_bank_unreachable_says_unknown_and_exits_3(
        ops_app: Flask, wf: Workflow, account: uuid.UUID) -> None:
    age(wf.engine, exchange_in(wf, account, "completed"), LONG_AGO)
    ops_app.extensions["fx.bank"] = bank_for(UNREACHABLE_BANK_URL)

    result = ops_app.test_cli_runner().invoke(args=["reconcile", "once"])

    assert result.exit_code == EXIT_UNKNOWN == 3
    (line,) = result.output.splitlines()
    assert line.startswith("UNKNOWN: ledger and bank could not be compared (bank unreachable")
    assert "agree" not in result.output
    html = ops_app.test_client().get("/ops/").get_data(as_text=True)
    assert "could not be compared" in html and ">unknown<" in html
    assert metric(ops_app.test_client(), "fx_reconciler_bank_compare_ok") == 0
    assert metric(ops_app.test_client(), "fx_reconciler_last_bank_compare_timestamp_seconds") == 0


def test_a_successful_comparison_sets_the_last_compare_timestamp(wf: Workflow, account: uuid.UUID,
                                                                 ops: FlaskClient) -> None:
    before = utcnow().timestamp()
    report = reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)
    assert report.compared and report.exit_code == 0
    assert metric(ops, "fx_reconciler_last_bank_compare_timestamp_seconds") >= before - 1
    assert metric(ops, "fx_reconciler_bank_compare_ok") == 1


def open_findings(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(reconciliation_findings.c.subject, reconciliation_findings.c.kind)
                                   .where(reconciliation_findings.c.resolved_at.is_(None))).all())


def test_a_bank_transfer_for_no_exchange_is_a_finding_that_resolves_when_the_bank_record_is_fixed(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    stranger = wf.bank.transfer(key="by-hand-1", reference="invoice 4711", account=str(account), currency="USD",
                                amount=Decimal("12.00"))

    report = reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)

    assert report.exit_code == EXIT_MISMATCH
    assert open_findings(wf.engine) == [(f"bank-transfer:{stranger.id}", "unknown_exchange")]
    assert "invoice 4711" in ops.get("/ops/").get_data(as_text=True)
    assert metric(ops, "fx_reconciliation_findings_open") == 1

    wf.bank.reverse(stranger.id)  # the bank's staff take the stray payment back

    report = reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)

    assert report.exit_code == 0
    assert report.resolved == [(None, "unknown_exchange", f"bank-transfer:{stranger.id}")]
    assert open_findings(wf.engine) == []
    assert metric(ops, "fx_reconciliation_findings_open") == 0


def test_a_finding_found_again_stays_one_is_acknowledged_resolved_by_hand_and_reopens_while_still_true(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    exchange_id = exchange_in(wf, account, "completed")
    held = row_of(wf.engine, exchange_id)
    age(wf.engine, exchange_id, LONG_AGO)
    reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)
    assert open_findings(wf.engine) == []
    wf.bank.transfer(key="manual-twice", reference=str(exchange_id), account=str(held.account_id),
                     currency="USD", amount=held.to_amount)
    assert reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE).exit_code == EXIT_MISMATCH
    assert open_findings(wf.engine) == [(str(exchange_id), "paid_twice")]
    assert metric(ops, "fx_reconciliation_findings_open") == 1
    notes = [(e.step, e.outcome) for e in events(wf.engine, exchange_id)]
    assert ("reconciler", "finding_opened") in notes

    # Found again: still one finding. Then an operator acknowledges it with a note.
    reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)
    with wf.engine.connect() as conn:
        (finding_id,) = conn.execute(select(reconciliation_findings.c.id)).scalars().all()
    response = ops.post(f"/api/ops/findings/{finding_id}/acknowledge", json={"note": "asked the bank to reverse"})
    assert response.status_code == 200, response.get_json()
    assert ("reconciler", "finding_acknowledged") in [(e.step, e.outcome) for e in events(wf.engine, exchange_id)]
    assert "asked the bank to reverse" in ops.get("/ops/").get_data(as_text=True)

    # The operator settles it by hand; the findings count goes back down.
    response = ops.post(f"/api/ops/findings/{finding_id}/resolve", json={"note": "reversed at the bank"})
    assert response.status_code == 200
    assert open_findings(wf.engine) == []
    assert metric(ops, "fx_reconciliation_findings_open") == 0
    assert ops.post(f"/api/ops/findings/{finding_id}/resolve", json={"note": "again"}).status_code == 409
    # The mismatch is still at the bank: the next pass opens it again, fresh (not acknowledged).
    reconcile_once(wf.engine, wf.bank, stuck_after=STUCK_AFTER, queue=QUEUE)
    with wf.engine.connect() as conn:
        row = conn.execute(select(reconciliation_findings)).one()
    assert (row.resolved_at, row.acknowledged_at, row.note) == (None, None, None)


def test_finding_actions_need_a_note_and_a_known_finding(ops: FlaskClient) -> None:
    assert ops.post("/api/ops/findings/999/acknowledge", json={"note": "x"}).get_json()["error"]["code"] == \
        "unknown_finding"
    assert ops.post("/api/ops/findings/999/frobnicate", json={"note": "x"}).get_json()["error"]["code"] == \
        "unknown_action"
    assert ops.post("/api/ops/findings/1/resolve", json={"note": 5}).status_code == 422


def test_findings_the_pass_did_not_judge_stay_open(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "completed")
    findings.record_pass(wf.engine, [findings.Finding(exchange_id, "paid_twice", "two")], judged=set(),
                         now=utcnow())
    change = findings.record_pass(wf.engine, [], judged=set(), now=utcnow())  # it was not looked at
    assert change.resolved == [] and open_findings(wf.engine) == [(str(exchange_id), "paid_twice")]
    change = findings.record_pass(wf.engine, [], judged={str(exchange_id)}, now=utcnow())
    assert change.resolved == [(exchange_id, "paid_twice", str(exchange_id))]


# --- live processes ------------------------------------------------------------------------------


def test_processes_are_alive_while_they_beat_dead_when_they_stop_beating_and_stopped_when_they_say_so(
        engine: Engine, ops: FlaskClient) -> None:
    ops.application.extensions["fx.settings"] = Settings(database_url="sqlite://", process_dead_after_seconds=15)
    worker = Heartbeat(engine, ProcessRole.WORKER, interval_seconds=5, holding=lambda: {"in_hand": 2})
    relay = Heartbeat(engine, ProcessRole.RELAY, interval_seconds=5)
    worker.beat()
    relay.beat()
    assert metric(ops, "fx_processes_alive", role="worker") == 1
    assert metric(ops, "fx_processes_alive", role="relay") == 1
    assert metric(ops, "fx_processes_alive", role="reconciler") == 0
    html = ops.get("/ops/").get_data(as_text=True)
    assert 'id="alarm-reconciler"' in html and 'id="alarm-worker"' not in html
    assert "2 in hand" in html

    with engine.begin() as conn:  # the worker's last beat was 16 s ago: it died
        conn.execute(update(process_heartbeats).where(process_heartbeats.c.role == "worker")
                     .values(beat_at=utcnow() - timedelta(seconds=16)))
    assert metric(ops, "fx_processes_alive", role="worker") == 0
    assert 'id="alarm-worker"' in ops.get("/ops/").get_data(as_text=True)

    relay.stop()
    assert metric(ops, "fx_processes_alive", role="relay") == 0
    assert 'class="status-stopped"' in ops.get("/ops/").get_data(as_text=True)


def test_a_claim_held_by_a_worker_that_is_gone_is_marked(wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    with wf.engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(claimed_by="host-that-died:4242:Thread-1", claimed_until=utcnow() + LONG_AGO,
                             progressed_at=utcnow() - LONG_AGO))
    html = ops.get("/ops/").get_data(as_text=True)
    section = html[html.index("<h2>Stuck"):html.index("<h2>Needs attention")]
    assert "held by host-that-died:4242:Thread-1 (gone)" in section


# --- alerts and every failure on the timeline ---------------------------------------------------


def test_a_parked_exchange_and_a_refund_after_a_bank_failure_each_alert_once_with_their_tags(
        sentry: CollectingTransport, wf: Workflow, account: uuid.UUID) -> None:
    parked = exchange_in(wf, account, "needs_attention")
    refunded = exchange_in(wf, account, "debited")
    fail_credit_for_good(wf, refunded)

    alerts = [(e["tags"]["exchange_id"], e["tags"]["step"], e.get("message") or e["logentry"]["message"])
              for e in sentry.errors()]
    assert all(e["level"] == "error" for e in sentry.errors())
    assert [(a[0], a[1]) for a in alerts] == [(str(parked), "credit_exchange"), (str(refunded), "credit_exchange")]
    assert alerts[0][2].startswith("exchange parked in needs_attention")
    assert alerts[1][2].startswith("exchange refunded after the bank failed")


def test_an_unexpected_exception_in_a_step_is_on_the_timeline_and_the_step_runs_again(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "quoted")
    actors = declare_actors(StubBroker(), Settings(database_url="sqlite://"), wf)
    failpoints.load("step.debit.before_commit=raise")
    try:
        with pytest.raises(failpoints.InjectedFault):
            actors[machine.DEBIT.actor].fn(str(exchange_id))
    finally:
        failpoints.load("")
    last = events(wf.engine, exchange_id)[-1]
    assert (last.step, last.outcome, last.state) == ("debit", "error", "quoted")
    assert last.error.startswith("InjectedFault") and "Traceback" in last.detail["traceback"]
    assert row_of(wf.engine, exchange_id).state == "quoted"  # its writes rolled back

    actors[machine.DEBIT.actor].fn(str(exchange_id))
    assert row_of(wf.engine, exchange_id).state == "debited"


def test_a_refund_after_the_bank_failed_for_good_keeps_the_error_that_caused_it(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    exchange_id = exchange_in(wf, account, "refunded")  # the bank answered 503 to every credit attempt

    row = row_of(wf.engine, exchange_id)
    assert row.state == "refunded" and "bank answered 503" in row.last_error
    page = ops.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True)
    assert 'id="last-error"' in page and "bank answered 503" in page


def test_an_exchange_page_offers_only_the_actions_its_state_allows_and_shows_resolved_trouble_as_history(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    debited = exchange_in(wf, account, "debited")
    page = ops.get(f"/ops/exchanges/{debited}").get_data(as_text=True)
    assert "/actions/retry" in page and "/actions/compensate" in page and "/actions/cancel" not in page

    wf.bank.set_faults(error_next=1)  # one failed credit attempt, then it pays
    try:
        with pytest.raises(StepDeferred):
            run_step(wf, machine.CREDIT.actor, debited)
    finally:
        wf.bank.reset_faults()
    assert drive(wf, debited) == "completed"
    page = ops.get(f"/ops/exchanges/{debited}").get_data(as_text=True)
    assert "/actions/" not in page and "No action applies to a completed exchange" in page
    assert '<div class="history">' in page and '<div class="trouble">' not in page and "Earlier trouble" in page


def test_search_finds_exchanges_by_id_account_customer_and_idempotency_key(
        wf: Workflow, ops: FlaskClient, customer: ApiCustomer, funded_account: uuid.UUID) -> None:
    accepted = create_exchange(wf.engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("5.00")),
                               queue=QUEUE, idempotency_key="order-77", owner=customer.id)
    exchange_id = accepted.exchange_id
    assert ops.get(f"/ops/search?q={exchange_id}").headers["Location"].endswith(f"/ops/exchanges/{exchange_id}")
    for query in (str(funded_account), str(customer.id), "order-77"):
        assert str(exchange_id) in ops.get(f"/ops/search?q={query}").get_data(as_text=True), query
    assert "Nothing matches" in ops.get("/ops/search?q=no-such-key").get_data(as_text=True)


def test_every_operator_action_is_in_the_audit_trail_with_who_and_the_note(
        wf: Workflow, account: uuid.UUID, ops: FlaskClient) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    assert ops.post(f"/api/ops/exchanges/{exchange_id}/actions/cancel").status_code == 202
    actions.add_note(wf.engine, exchange_id, "alice", "customer asked by phone")

    page = ops.get("/ops/audit").get_data(as_text=True)
    assert "cancelled" in page and "customer asked by phone" in page and "alice" in page
    exchange_page = ops.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True)
    assert "<h2>Operator actions</h2>" in exchange_page and "customer asked by phone" in exchange_page


def test_the_operator_document_lists_every_operator_json_route_and_each_answers_as_documented(
        ops: FlaskClient) -> None:
    document = ops.get("/api/ops/openapi.json").get_json()
    documented = {path.replace("{", "<").replace("}", ">") for path in document["paths"]}
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule.rule) for rule in ops.application.url_map.iter_rules()
              if rule.rule.startswith("/api/ops/") and rule.rule != "/api/ops/openapi.json"}
    assert routes == documented
    timeline_answers = document["paths"]["/api/ops/exchanges/{exchange_id}/timeline"]["get"]["responses"]
    assert str(ops.get(f"/api/ops/exchanges/{uuid.uuid4()}/timeline").status_code) in timeline_answers
    calls = {"/api/ops/exchanges/{exchange_id}/actions/{action}": f"/api/ops/exchanges/{uuid.uuid4()}/actions/retry",
             "/api/ops/findings/{finding_id}/{action}": "/api/ops/findings/424242/resolve",
             "/api/ops/dead-letters/{message_id}/{action}": "/api/ops/dead-letters/m-1/replay",
             "/api/ops/dead-letters/all/{action}": "/api/ops/dead-letters/all/delete"}
    for path, url in calls.items():
        response = ops.post(url, json={"note": "n"})
        assert str(response.status_code) in document["paths"][path]["post"]["responses"], (url, response.status_code)
        if response.status_code >= 400:
            assert set(response.get_json()["error"]) >= {"code", "message"}


DOCS = Path(__file__).resolve().parent.parent / "docs"
METRIC_NAME = re.compile(r"\bfx_[a-z_]+\b")


def test_every_metric_the_alert_rules_and_the_grafana_dashboard_use_is_served(ops: FlaskClient) -> None:
    served = set(METRIC_NAME.findall(ops.get("/metrics").get_data(as_text=True)))
    rules = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used and used <= served, f"not served: {used - served}"
    required = {"fx_exchanges_stuck", "fx_processes_alive", "fx_dead_letters", "fx_broker_up",
                "fx_reconciliation_findings_open", "fx_reconciler_last_bank_compare_timestamp_seconds"}
    assert required <= used


def test_an_operators_retry_supersedes_the_pending_broker_retry_so_its_budget_is_really_fresh(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    wf.bank.set_faults(down=True)
    try:
        with pytest.raises(StepDeferred):  # attempt 1 fails: Dramatiq would retry this message later
            run_step(wf, machine.CREDIT.actor, exchange_id, epoch=0)
    finally:
        wf.bank.reset_faults()
    assert row_of(wf.engine, exchange_id).attempt == 1

    actions.retry_step(wf.engine, exchange_id, "alice", queue=QUEUE)

    credits_before = len([e for e in events(wf.engine, exchange_id) if e.step == "credit"])
    # The broker's pending retry of the old message comes: acknowledged, no attempt spent, nothing done.
    actors = declare_actors(StubBroker(), Settings(database_url="sqlite://"), wf)
    actors[machine.CREDIT.actor].fn(str(exchange_id), 0)
    row = row_of(wf.engine, exchange_id)
    assert (row.state, row.attempt, row.step_epoch) == ("debited", 0, 1)
    assert len([e for e in events(wf.engine, exchange_id) if e.step == "credit"]) == credits_before
    # The operator's message (epoch 1) runs with a budget of its own: attempt 1 of it, and it pays.
    actors[machine.CREDIT.actor].fn(str(exchange_id), 1)
    row = row_of(wf.engine, exchange_id)
    assert (row.state, row.attempt) == ("completed", 1)  # the credit commits with complete and the receipt
    assert len(wf.bank.all_applied()) == 1
