"""A reconciler pass costs what changed since the last one: the bank's change feed, and the exchanges
settled since; yet a late payment or a reversal at the bank is still caught.

Passes run at the real time with no settling delay (an exchange is judged as soon as a pass runs
after its last change); only a test's last pass may look into the future, since a write after
it would carry a time that pass had already covered.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from bank.server import create_app as create_bank
from bank.store import TransferStore
from models import ops_checks, reconciliation_findings
from models.base import utcnow
from ops import checks
from ops.reconciler import Comparison, compare_ledger, reconcile_once
from services.accounts import open_account
from services.workflow import Workflow
from tests.ops_support import bank_for, exchange_in, row_of

SETTLED_AT_ONCE = timedelta(0)
#: Nothing listens on port 1.
UNREACHABLE_BANK_URL = "http://127.0.0.1:1"


@pytest.fixture
def account(engine: Engine) -> uuid.UUID:
    return open_account(engine, "Incremental Customer", {"CAD": Decimal("1000.00")})


def incremental(wf: Workflow, *, settle_after: timedelta = SETTLED_AT_ONCE, now: datetime | None = None) -> Comparison:
    return compare_ledger(wf.engine, wf.bank, settle_after=settle_after, now=now or utcnow(), full=False)


def open_findings(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {(r.subject, r.kind) for r in conn.execute(
            select(reconciliation_findings).where(reconciliation_findings.c.resolved_at.is_(None)))}


def pay(wf: Workflow, reference: str, account: uuid.UUID, key: str, amount: Decimal = Decimal("5.00")) -> str:
    return wf.bank.transfer(key=key, reference=reference, account=str(account), currency="USD", amount=amount).id


# --- the bank's change feed --------------------------------------------------------------------


def test_the_bank_feed_pages_changes_in_order_and_a_reversal_moves_a_transfer_to_its_end(tmp_path: Path) -> None:
    store = TransferStore(str(tmp_path / "bank.db"))
    first, _ = store.apply("k1", {"reference": "r1", "account": "a", "currency": "USD", "amount": "1"})
    second, _ = store.apply("k2", {"reference": "r2", "account": "a", "currency": "USD", "amount": "2"})
    store.void("k3", "r3")

    assert [t.id for t in store.changes_after(0, 2)] == [first.id, second.id]
    assert [t.status for t in store.changes_after(2, 10)] == ["voided"]
    store.reverse(first.id)
    assert [(t.id, t.status, t.change_seq) for t in store.changes_after(3, 10)] == [(first.id, "reversed", 4)]
    assert store.changes_after(4, 10) == []


def test_a_bank_file_from_before_the_feed_gets_every_transfer_a_place_in_it(tmp_path: Path) -> None:
    path = tmp_path / "old-bank.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, "
                "reference TEXT NOT NULL, account TEXT NOT NULL, currency TEXT NOT NULL, amount TEXT NOT NULL, "
                "status TEXT NOT NULL, created_at TEXT NOT NULL, request_hash TEXT NOT NULL)")
    for n in (1, 2):
        old.execute("INSERT INTO transfers VALUES (?, ?, ?, 'a', 'USD', '1', 'applied', '2026-01-01', '{}')",
                    (f"t{n}", f"k{n}", f"r{n}"))
    old.commit()
    old.close()

    store = TransferStore(str(path))
    assert [(t.id, t.change_seq) for t in store.changes_after(0, 10)] == [("t1", 1), ("t2", 2)]
    third, _ = store.apply("k3", {"reference": "r3", "account": "a", "currency": "USD", "amount": "1"})
    assert third.change_seq == 3


@pytest.mark.parametrize("query", ["after=x", "after=-1", "limit=0", "limit=5000"])
def test_the_bank_refuses_a_bad_change_feed_question_with_a_clear_400(tmp_path: Path, query: str) -> None:
    client = create_bank(str(tmp_path / "bank.db")).test_client()
    response = client.get(f"/transfers/changes?{query}")
    assert response.status_code == 400
    assert "after" in response.get_json()["error"]


# --- what a pass reads ---------------------------------------------------------------------------


def test_a_pass_after_a_quiet_spell_judges_nothing_and_reads_nothing_from_the_bank(
        wf: Workflow, account: uuid.UUID) -> None:
    for _ in range(3):
        exchange_in(wf, account, "completed")
    first = incremental(wf)  # no pass before: it judges every settled exchange
    assert (first.full, first.judged, first.bank_changes) == (True, 3, 3)

    quiet = incremental(wf)
    assert (quiet.full, quiet.judged, quiet.bank_changes, quiet.findings) == (False, 0, 0, [])


def test_an_incremental_pass_judges_only_the_exchanges_settled_since_the_last(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_in(wf, account, "completed")
    incremental(wf)
    exchange_in(wf, account, "completed")

    settled = incremental(wf)
    assert (settled.full, settled.judged, settled.bank_changes, settled.findings) == (False, 1, 1, [])


def test_an_exchange_is_judged_once_it_has_settled_not_while_it_may_still_move(
        wf: Workflow, account: uuid.UUID) -> None:
    two_minutes = timedelta(minutes=2)
    incremental(wf, settle_after=two_minutes)
    moving = exchange_in(wf, account, "debited")
    pay(wf, str(moving), account, key="credit-in-flight", amount=row_of(wf.engine, moving).to_amount)

    assert incremental(wf, settle_after=two_minutes).judged == 0  # paid there, not here yet: normal
    settled = incremental(wf, settle_after=two_minutes, now=utcnow() + timedelta(minutes=3))
    assert [(f.exchange_id, f.kind) for f in settled.findings] == [(moving, "bank_paid_not_credited")]


def test_a_second_payment_made_at_the_bank_long_after_the_exchange_settled_is_caught(
        wf: Workflow, account: uuid.UUID) -> None:
    paid = exchange_in(wf, account, "completed")
    exchange_in(wf, account, "completed")
    incremental(wf)

    pay(wf, str(paid), account, key="by-hand", amount=row_of(wf.engine, paid).to_amount)
    caught = incremental(wf)
    assert (caught.judged, caught.bank_changes) == (1, 1)  # the one exchange the bank's change names
    assert [(f.exchange_id, f.kind) for f in caught.findings] == [(paid, "paid_twice")]


def test_a_reversal_at_the_bank_resolves_a_stranger_payment_without_a_full_pass(
        wf: Workflow, account: uuid.UUID) -> None:
    stranger = pay(wf, "not-an-exchange", account, key="stray")
    found = incremental(wf)
    assert open_findings(wf.engine) == {(f"bank-transfer:{stranger}", "unknown_exchange")}
    assert found.full

    wf.bank.reverse(stranger)
    resolved = incremental(wf)
    assert (resolved.full, resolved.bank_changes) == (False, 1)
    assert open_findings(wf.engine) == set()


def test_a_stranger_payment_still_open_is_not_resolved_by_a_pass_that_did_not_look_at_it(
        wf: Workflow, account: uuid.UUID) -> None:
    stranger = pay(wf, "not-an-exchange", account, key="stray")
    incremental(wf)
    exchange_in(wf, account, "completed")
    incremental(wf)
    assert open_findings(wf.engine) == {(f"bank-transfer:{stranger}", "unknown_exchange")}


def test_a_pass_that_could_not_reach_the_bank_does_not_move_the_watermark(
        wf: Workflow, account: uuid.UUID) -> None:
    exchange_in(wf, account, "completed")
    incremental(wf)
    with wf.engine.connect() as conn:
        covered = checks.covered_through(conn, checks.BANK_COMPARE)

    moving = exchange_in(wf, account, "debited")  # the bank pays; the credit never lands here
    pay(wf, str(moving), account, key="credit-in-flight", amount=row_of(wf.engine, moving).to_amount)
    gone = reconcile_once(wf.engine, bank_for(UNREACHABLE_BANK_URL), stuck_after=SETTLED_AT_ONCE, queue="q",
                          full=False)
    assert not gone.compared
    with wf.engine.connect() as conn:
        assert conn.execute(select(ops_checks.c.covered_through)).scalar_one() == covered

    back = incremental(wf)
    assert [(f.exchange_id, f.kind) for f in back.findings] == [(moving, "bank_paid_not_credited")]


def test_a_full_pass_judges_every_settled_exchange_again(wf: Workflow, account: uuid.UUID) -> None:
    for _ in range(2):
        exchange_in(wf, account, "completed")
    incremental(wf)
    again = compare_ledger(wf.engine, wf.bank, settle_after=SETTLED_AT_ONCE, now=utcnow(), full=True)
    assert (again.full, again.judged, again.bank_changes) == (True, 2, 0)


def test_the_reconcile_report_says_what_the_pass_read(wf: Workflow, account: uuid.UUID) -> None:
    exchange_in(wf, account, "completed")
    report = reconcile_once(wf.engine, wf.bank, stuck_after=SETTLED_AT_ONCE, queue="q", full=False)
    assert report.compared and (report.judged, report.bank_changes) == (1, 1)
