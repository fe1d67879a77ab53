"""The reconciler: stuck exchanges sent on again, ledger/bank mismatches found, stored, shown and printed.

Time is moved by rewriting `updated_at` / `claimed_until`, never by sleeping.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from domain import states as machine
from harness import invariants
from models import exchanges, reconciliation_findings
from models.base import utcnow
from ops.reconciler import Finding, compare_with_bank, reconcile_once, requeue_stuck
from services.accounts import open_account
from services.workflow import STEPS, Delivery, StepResult, Workflow, credit_key
from tests.ops_support import (
    age,
    bank_for,
    events,
    exchange_in,
    kill_worker_mid_step,
    messages_for,
    row_of,
)
from tests.workflow_support import drive, state_of

QUEUE = "exchanges"
STUCK_AFTER = timedelta(minutes=2)
#: Well past STUCK_AFTER: how long ago the dead worker last touched the exchange.
LONG_AGO = timedelta(minutes=10)
#: Nothing listens on port 1.
UNREACHABLE_BANK_URL = "http://127.0.0.1:1"


@pytest.fixture
def account(engine: Engine) -> uuid.UUID:
    return open_account(engine, "Reconciled Customer", {"CAD": Decimal("1000.00")})


def deliver(wf: Workflow, message: object, worker: str) -> StepResult:
    exchange_id = uuid.UUID(message.payload["exchange_id"])  # type: ignore[attr-defined]
    # The payload is the actor's kwargs, as a broker delivers them.
    epoch = message.payload.get("epoch", 0)  # type: ignore[attr-defined]
    return STEPS[message.actor](wf, Delivery(exchange_id, worker, message.id, epoch))  # type: ignore[attr-defined]


def assert_invariants(wf: Workflow) -> None:
    report = invariants.check(wf.engine, bank=wf.bank, settled=False)
    assert report.ok, str(report)


def findings_stored(engine: Engine) -> list[tuple[uuid.UUID, str]]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(reconciliation_findings.c.exchange_id, reconciliation_findings.c.kind)
                                   .where(reconciliation_findings.c.resolved_at.is_(None))).all())


# --- stuck exchanges -----------------------------------------------------------------------


def test_a_credit_left_behind_by_a_dead_worker_is_requeued_and_then_completes(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    kill_worker_mid_step(wf.engine, exchange_id, step="credit", expected="debited", idle=LONG_AGO)
    sent_before = len(messages_for(wf.engine, exchange_id))
    now = utcnow()

    requeued = requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE, now=now)

    assert requeued == [(exchange_id, "debited", machine.CREDIT.actor)]
    (message,) = messages_for(wf.engine, exchange_id)[sent_before:]
    assert message.actor == machine.CREDIT.actor and message.published_at is None
    note = events(wf.engine, exchange_id)[-1]
    assert (note.step, note.outcome, note.state, note.worker) == ("reconciler", "requeued", "debited", "reconciler")
    assert note.detail["actor"] == machine.CREDIT.actor
    assert note.detail["message_id"] == str(message.id)
    assert note.detail["idle_seconds"] >= LONG_AGO.total_seconds()

    # The requeued message reaches a live worker: it takes the expired claim over and pays once.
    assert deliver(wf, message, worker="rescuer") is StepResult.ADVANCED
    credit = [e for e in events(wf.engine, exchange_id) if e.step == "credit"]
    assert [(e.outcome, e.worker) for e in credit] == [("rescued", "rescuer"), ("succeeded", "rescuer")]
    assert "the claim of dead-worker expired without a result" in credit[0].error
    assert credit[1].message_id == message.id
    assert drive(wf, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert_invariants(wf)


def test_an_exchange_whose_lease_has_not_run_out_is_not_requeued(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "debited")
    kill_worker_mid_step(wf.engine, exchange_id, step="credit", expected="debited", idle=LONG_AGO)
    with wf.engine.begin() as conn:  # a slow worker, still within its lease
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(claimed_until=utcnow() + timedelta(minutes=1)))
    sent_before = len(messages_for(wf.engine, exchange_id))

    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE) == []
    assert len(messages_for(wf.engine, exchange_id)) == sent_before


def test_an_exchange_that_moved_recently_is_not_requeued(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "quoted")
    age(wf.engine, exchange_id, STUCK_AFTER - timedelta(seconds=30))

    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE) == []


def test_a_requeued_exchange_is_not_sent_again_before_another_stuck_after_passes(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "pending")
    age(wf.engine, exchange_id, LONG_AGO)
    now = utcnow()

    assert len(requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE, now=now)) == 1
    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE, now=now + timedelta(seconds=60)) == []
    again = requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE, now=now + STUCK_AFTER * 2)
    assert again == [(exchange_id, "pending", machine.QUOTE.actor)]
    assert [m.actor for m in messages_for(wf.engine, exchange_id)] == [machine.QUOTE.actor] * 3


def test_closed_exchanges_are_never_requeued(wf: Workflow, account: uuid.UUID) -> None:
    for state in ("completed", "failed", "refunded"):
        age(wf.engine, exchange_in(wf, account, state), LONG_AGO)

    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE) == []


def test_a_parked_exchange_is_sent_to_the_bank_resolution_and_refunded_when_never_paid(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = exchange_in(wf, account, "needs_attention")
    age(wf.engine, exchange_id, LONG_AGO)

    assert requeue_stuck(wf.engine, stuck_after=STUCK_AFTER, queue=QUEUE) == [
        (exchange_id, "needs_attention", machine.RESOLVE.actor)]
    message = messages_for(wf.engine, exchange_id)[-1]
    assert deliver(wf, message, worker="resolver") is StepResult.ADVANCED
    assert wf.bank.lookup(credit_key(exchange_id)).status == "voided"  # type: ignore[union-attr]
    assert drive(wf, exchange_id) == "refunded"
    assert_invariants(wf)


def test_the_dashboard_lists_a_stuck_exchange(ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    stuck = exchange_in(wf, account, "quoted")
    age(wf.engine, stuck, LONG_AGO)
    fresh = exchange_in(wf, account, "quoted")

    html = ops.get("/ops/").get_data(as_text=True)

    section = html[html.index("<h2>Stuck"):html.index("<h2>Needs attention")]
    assert str(stuck) in section
    assert str(fresh) not in section


# --- ledger against bank -------------------------------------------------------------------


@pytest.fixture
def mismatches(wf: Workflow, account: uuid.UUID) -> dict[str, uuid.UUID]:
    """A completed exchange paid twice and a refunded one paid anyway, made at the bank on purpose."""
    completed = exchange_in(wf, account, "completed")
    refunded = exchange_in(wf, account, "refunded")
    healthy = exchange_in(wf, account, "completed")
    to_amount = row_of(wf.engine, completed).to_amount
    # Someone pays at the bank by hand, with keys of their own, naming our exchanges.
    wf.bank.transfer(key="manual-1", reference=str(completed), account=str(account), currency="USD",
                     amount=to_amount)
    wf.bank.transfer(key="manual-2", reference=str(refunded), account=str(account), currency="USD",
                     amount=row_of(wf.engine, refunded).to_amount)
    for exchange_id in (completed, refunded, healthy):
        age(wf.engine, exchange_id, LONG_AGO)  # settled: no step will change them now
    return {"paid_twice": completed, "refunded_but_paid": refunded, "healthy": healthy}


def test_compare_with_bank_reports_and_stores_every_mismatch(
        wf: Workflow, mismatches: dict[str, uuid.UUID]) -> None:
    found = compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)

    assert sorted(found, key=lambda f: f.kind) == [
        Finding(mismatches["paid_twice"], "paid_twice", "the bank applied 2 transfers"),
        Finding(mismatches["refunded_but_paid"], "refunded_but_paid", "refunded here, yet the bank paid the credit"),
    ]
    assert findings_stored(wf.engine) == sorted([(mismatches["paid_twice"], "paid_twice"),
                                                 (mismatches["refunded_but_paid"], "refunded_but_paid")])


def test_a_mismatch_found_again_is_stored_once(wf: Workflow, mismatches: dict[str, uuid.UUID]) -> None:
    compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)
    compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)

    assert len(findings_stored(wf.engine)) == 2


def test_exchanges_still_moving_are_not_judged(wf: Workflow, account: uuid.UUID) -> None:
    # Paid at the bank, not yet credited here: normal for a credit in flight.
    exchange_id = exchange_in(wf, account, "debited")
    wf.bank.transfer(key=credit_key(exchange_id), reference=str(exchange_id), account=str(account),
                     currency="USD", amount=row_of(wf.engine, exchange_id).to_amount)

    assert compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER) == []
    age(wf.engine, exchange_id, LONG_AGO)
    assert [f.kind for f in compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)] == [
        "bank_paid_not_credited"]


def test_the_dashboard_shows_the_stored_mismatches(
        ops: FlaskClient, wf: Workflow, mismatches: dict[str, uuid.UUID]) -> None:
    compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER)

    html = ops.get("/ops/").get_data(as_text=True)

    assert "<h2>Ledger / bank mismatches</h2>" in html
    section = html[html.index("<h2>Ledger / bank mismatches</h2>"):]
    section = section[:section.index("</table>")]
    assert str(mismatches["paid_twice"]) in section and "the bank applied 2 transfers" in section
    assert str(mismatches["refunded_but_paid"]) in section and "refunded_but_paid" in section
    assert str(mismatches["healthy"]) not in section


def test_the_dashboard_has_no_mismatch_section_when_ledger_and_bank_agree(
        ops: FlaskClient, wf: Workflow, account: uuid.UUID) -> None:
    age(wf.engine, exchange_in(wf, account, "completed"), LONG_AGO)
    assert compare_with_bank(wf.engine, wf.bank, settle_after=STUCK_AFTER) == []

    assert "Ledger / bank mismatches" not in ops.get("/ops/").get_data(as_text=True)


def test_reconcile_once_command_prints_each_mismatch_and_each_requeued_exchange(
        ops_app: Flask, wf: Workflow, account: uuid.UUID, mismatches: dict[str, uuid.UUID]) -> None:
    stuck = exchange_in(wf, account, "quoted")
    age(wf.engine, stuck, LONG_AGO)

    result = ops_app.test_cli_runner().invoke(args=["reconcile", "once"])

    assert result.exit_code == 1, result.output  # a mismatch found: non-zero, for cron and CI alike
    lines = result.output.splitlines()
    assert f"re-enqueued {stuck} (quoted) -> debit_exchange" in lines
    assert f"MISMATCH paid_twice {mismatches['paid_twice']}: the bank applied 2 transfers" in lines
    assert (f"MISMATCH refunded_but_paid {mismatches['refunded_but_paid']}: "
            "refunded here, yet the bank paid the credit") in lines
    assert len(lines) == 3
    assert len(findings_stored(wf.engine)) == 2
    assert state_of(wf.engine, stuck) == "quoted"  # sent on through the outbox, not run here


def test_reconcile_once_command_says_so_when_all_is_well(ops_app: Flask, wf: Workflow, account: uuid.UUID) -> None:
    age(wf.engine, exchange_in(wf, account, "completed"), LONG_AGO)

    result = ops_app.test_cli_runner().invoke(args=["reconcile", "once"])

    assert result.exit_code == 0
    assert result.output.splitlines() == ["nothing stuck, ledger and bank agree"]


def test_a_pass_with_the_bank_unreachable_still_requeues_stuck_exchanges(wf: Workflow, account: uuid.UUID) -> None:
    stuck = exchange_in(wf, account, "pending")
    age(wf.engine, stuck, LONG_AGO)

    report = reconcile_once(wf.engine, bank_for(UNREACHABLE_BANK_URL), stuck_after=STUCK_AFTER, queue=QUEUE)

    assert report.requeued == [(stuck, "pending", machine.QUOTE.actor)]
    assert report.findings == []
