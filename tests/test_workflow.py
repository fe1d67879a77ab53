"""The exchange's steps, in-process on both backends, against the real bank service over HTTP."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select, update

from bank.client import BankClient
from domain import states as machine
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from harness import invariants
from models import balances, exchange_events, exchanges, ledger_entries, outbox_messages
from models.base import utcnow
from services.accounts import open_account
from services.claims import claim
from services.workflow import StepDeferred, StepResult, Workflow, WorkflowConfig
from tests.ops_support import stepwise
from tests.workflow_support import accept, drive, run_step, state_of


@pytest.fixture
def account(engine: Engine) -> uuid.UUID:
    return open_account(engine, "Workflow Customer", {"CAD": Decimal("1000.00")})


@pytest.fixture
def wf(engine: Engine, bank_url: str) -> Workflow:
    """Short bank timeouts: these tests stall the bank's answer past them."""
    return Workflow(
        engine=engine,
        bank=BankClient(bank_url, connect_timeout=0.5, read_timeout=0.5),
        rates=TableRateProvider(DEFAULT_USD_VALUES),
        config=WorkflowConfig(lease=timedelta(seconds=5), credit_max_attempts=3, continue_inline=False),
    )


def balance(engine: Engine, account: uuid.UUID, currency: str) -> tuple[Decimal, Decimal]:
    with engine.connect() as conn:
        row = conn.execute(
            select(balances.c.available, balances.c.held).where(
                balances.c.account_id == account, balances.c.currency == currency)
        ).first()
    return (Decimal(0), Decimal(0)) if row is None else (row.available, row.held)


def events(engine: Engine, exchange_id: uuid.UUID) -> list[tuple[str, str, int, str | None]]:
    with engine.connect() as conn:
        return [
            (r.step, r.outcome, r.attempt, r.error)
            for r in conn.execute(
                select(exchange_events).where(exchange_events.c.exchange_id == exchange_id)
                .order_by(exchange_events.c.id))
        ]


def assert_invariants(wf: Workflow) -> None:
    report = invariants.check(wf.engine, bank=wf.bank, settled=False)
    assert report.ok, str(report)


def test_an_exchange_completes_with_one_debit_one_credit_and_a_receipt(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account, "100.00")
    assert drive(wf, exchange_id) == "completed"
    assert balance(wf.engine, account, "CAD") == (Decimal("900.00"), Decimal("0"))
    assert balance(wf.engine, account, "USD") == (Decimal("73.10"), Decimal("0"))
    steps = [(step, outcome) for step, outcome, _, _ in events(wf.engine, exchange_id)]
    assert steps == [("accept", "accepted"), ("quote", "succeeded"), ("debit", "succeeded"),
                     ("credit", "succeeded"), ("complete", "succeeded"), ("receipt", "sent")]
    assert [t.reference for t in wf.bank.all_applied()] == [str(exchange_id)]
    assert_invariants(wf)


#: The messages of a happy exchange: with local steps fused, the debit runs in the quote's
#: transaction and complete and the receipt in the credit's; stepwise, one message per step.
MESSAGES = {
    True: (machine.QUOTE.actor, machine.CREDIT.actor),
    False: (machine.QUOTE.actor, machine.DEBIT.actor, machine.CREDIT.actor, machine.COMPLETE.actor,
            machine.RECEIPT.actor),
}
ALL_STEPS = MESSAGES[False]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stepwise"])
def test_every_message_delivered_twice_moves_money_once(wf: Workflow, account: uuid.UUID, fused: bool) -> None:
    wf = wf if fused else stepwise(wf)
    exchange_id = accept(wf.engine, account, "250.00")
    for actor in MESSAGES[fused]:
        assert run_step(wf, actor, exchange_id) is StepResult.ADVANCED
        assert run_step(wf, actor, exchange_id) is StepResult.SKIPPED
    assert state_of(wf.engine, exchange_id) == "completed"
    # A stray message of any step (a re-send, a replayed dead letter) is acknowledged with no effect.
    assert [run_step(wf, actor, exchange_id) for actor in ALL_STEPS] == [StepResult.SKIPPED] * len(ALL_STEPS)
    assert len(wf.bank.all_applied()) == 1
    assert_invariants(wf)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stepwise"])
def test_a_step_delivered_to_two_workers_at_once_runs_once(pg_engine: Engine, bank_url: str, fused: bool) -> None:
    bank = BankClient(bank_url, connect_timeout=2.0, read_timeout=5.0)
    config = WorkflowConfig(fuse_local_steps=fused, continue_inline=False)
    wf = Workflow(pg_engine, bank, TableRateProvider(DEFAULT_USD_VALUES), config)
    account = open_account(pg_engine, "Racer", {"CAD": Decimal("1000.00")})
    exchange_id = accept(pg_engine, account, "10.00")
    for actor in MESSAGES[fused][:3]:  # up to and through the credit
        barrier = threading.Barrier(4)
        results: list[object] = []

        def deliver(actor: str = actor, barrier: threading.Barrier = barrier,
                    results: list[object] = results) -> None:
            barrier.wait()
            try:
                results.append(run_step(wf, actor, exchange_id, worker=threading.current_thread().name))
            except StepDeferred as deferred:
                results.append(deferred)

        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(StepResult.ADVANCED) == 1, results
    drive(wf, exchange_id)
    assert len(wf.bank.all_applied()) == 1
    assert_invariants(wf)


def test_a_bank_timeout_after_applying_is_retried_and_credited_once(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account)
    run_step(wf, machine.QUOTE.actor, exchange_id)
    run_step(wf, machine.DEBIT.actor, exchange_id)
    wf.bank.set_faults(timeout_after_apply_next=1, stall_ms=1500)
    with pytest.raises(StepDeferred):
        run_step(wf, machine.CREDIT.actor, exchange_id)
    assert len(wf.bank.all_applied()) == 1  # the bank did apply it
    assert state_of(wf.engine, exchange_id) == "debited"
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.ADVANCED
    assert drive(wf, exchange_id) == "completed"
    credit_events = [e for e in events(wf.engine, exchange_id) if e[0] == "credit"]
    assert [(outcome, attempt) for _, outcome, attempt, _ in credit_events] == [("retrying", 1), ("succeeded", 2)]
    assert "did not answer" in (credit_events[0][3] or "")
    assert len(wf.bank.all_applied()) == 1
    assert_invariants(wf)


def test_the_bank_down_for_good_refunds_a_debited_exchange(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account, "300.00")
    wf.bank.set_faults(down=True)
    assert drive(wf, exchange_id) == "refunded"
    assert balance(wf.engine, account, "CAD") == (Decimal("1000.00"), Decimal("0"))
    timeline = events(wf.engine, exchange_id)
    credit_outcomes = [(outcome, attempt) for step, outcome, attempt, _ in timeline if step == "credit"]
    assert credit_outcomes == [("retrying", 1), ("retrying", 2), ("failed", 3)]
    assert all("503" in (error or "") for step, _, _, error in timeline if step == "credit")
    assert ("compensate", "compensated") in [(s, o) for s, o, _, _ in timeline]
    wf.bank.reset_faults()
    assert wf.bank.all_applied() == []
    assert_invariants(wf)


def test_an_unanswered_credit_is_voided_at_the_bank_before_refunding(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account, "40.00")
    run_step(wf, machine.QUOTE.actor, exchange_id)
    run_step(wf, machine.DEBIT.actor, exchange_id)
    wf.bank.set_faults(error_next=2)
    for _ in range(2):
        with pytest.raises(StepDeferred):
            run_step(wf, machine.CREDIT.actor, exchange_id)
    # The last attempt is sent but not answered, and never applied: unknown until asked.
    with wf.engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id).values(outcome_unknown=True))
    wf.bank.set_faults(error_next=1)
    assert drive(wf, exchange_id) == "refunded"
    assert wf.bank.lookup(f"{exchange_id}:credit").status == "voided"  # type: ignore[union-attr]
    assert_invariants(wf)


def test_an_unknown_outcome_with_the_bank_unreachable_parks_the_exchange(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account, "40.00")
    run_step(wf, machine.QUOTE.actor, exchange_id)
    run_step(wf, machine.DEBIT.actor, exchange_id)
    wf.bank.set_faults(timeout_after_apply_next=3, stall_ms=1000)
    for _ in range(2):
        with pytest.raises(StepDeferred):
            run_step(wf, machine.CREDIT.actor, exchange_id)
    wf.bank.set_faults(down=True)
    assert run_step(wf, machine.CREDIT.actor, exchange_id) is StepResult.PARKED
    assert state_of(wf.engine, exchange_id) == "needs_attention"
    last = events(wf.engine, exchange_id)[-1]
    assert last[1] == "parked" and "could not ask the bank" in (last[3] or "")
    assert balance(wf.engine, account, "CAD") == (Decimal("960.00"), Decimal("0"))  # debited, not refunded
    assert_invariants(wf)


def test_a_worker_whose_claim_was_taken_over_cannot_write(wf: Workflow, account: uuid.UUID) -> None:
    wf = stepwise(wf)
    exchange_id = accept(wf.engine, account, "60.00")
    run_step(wf, machine.QUOTE.actor, exchange_id)
    run_step(wf, machine.DEBIT.actor, exchange_id)

    # The first worker stalls inside the bank call until its lease has expired and a
    # second worker has taken the step over and completed it.
    original = wf.bank.transfer
    taken_over = threading.Event()

    def slow_transfer(**kwargs: object) -> object:
        answer = original(**kwargs)  # type: ignore[arg-type]
        with wf.engine.begin() as conn:  # the lease runs out
            conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                         .values(claimed_until=utcnow() - timedelta(seconds=1)))
        wf.bank.transfer = original  # type: ignore[method-assign]
        assert run_step(wf, machine.CREDIT.actor, exchange_id, worker="rescuer") is StepResult.ADVANCED
        taken_over.set()
        return answer

    wf.bank.transfer = slow_transfer  # type: ignore[method-assign]
    assert run_step(wf, machine.CREDIT.actor, exchange_id, worker="zombie") is StepResult.LOST_CLAIM
    assert taken_over.is_set()
    with wf.engine.connect() as conn:
        credits = conn.execute(select(func.count()).select_from(ledger_entries).where(
            ledger_entries.c.exchange_id == exchange_id, ledger_entries.c.kind == "credit")).scalar_one()
        complete_messages = conn.execute(select(func.count()).select_from(outbox_messages).where(
            outbox_messages.c.actor == machine.COMPLETE.actor)).scalar_one()
    assert credits == 2  # one posting: the rescuer's (two entries)
    assert complete_messages == 1
    assert ("credit", "lost_claim") in [(s, o) for s, o, _, _ in events(wf.engine, exchange_id)]
    assert len(wf.bank.all_applied()) == 1
    assert drive(wf, exchange_id) == "completed"
    assert_invariants(wf)


def test_a_step_claimed_by_a_live_worker_is_deferred_until_its_lease_ends(wf: Workflow, account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, account)
    with wf.engine.begin() as conn:
        claim(conn, exchange_id, expected="pending", step="quote", worker="other",  # type: ignore[arg-type]
              lease=timedelta(seconds=5), now=utcnow())
    with pytest.raises(StepDeferred) as deferred:
        run_step(wf, machine.QUOTE.actor, exchange_id)
    assert deferred.value.delay_ms is not None and deferred.value.delay_ms > 1000
    assert state_of(wf.engine, exchange_id) == "pending"


def test_a_pair_without_a_rate_fails_and_releases_the_hold(engine: Engine, bank_url: str) -> None:
    rates = {k: v for k, v in DEFAULT_USD_VALUES.items() if k != "USD"} | {"EUR": Decimal("1.08")}
    wf = Workflow(engine, BankClient(bank_url, connect_timeout=2.0, read_timeout=5.0), TableRateProvider(rates))
    account = open_account(engine, "No Rate", {"CAD": Decimal("100.00")})
    exchange_id = accept(engine, account, "10.00")
    assert drive(wf, exchange_id) == "failed"
    assert balance(engine, account, "CAD") == (Decimal("100.00"), Decimal("0"))
    assert_invariants(wf)


def test_an_expired_quote_is_priced_again_at_the_debit(wf: Workflow, account: uuid.UUID) -> None:
    wf = stepwise(wf)  # a debit message delivered long after its quote's
    exchange_id = accept(wf.engine, account, "100.00")
    run_step(wf, machine.QUOTE.actor, exchange_id)
    with wf.engine.begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(quote_expires_at=utcnow() - timedelta(seconds=1), rate=Decimal("0.5")))
    run_step(wf, machine.DEBIT.actor, exchange_id)
    with wf.engine.connect() as conn:
        rate = conn.execute(select(exchanges.c.rate).where(exchanges.c.id == exchange_id)).scalar_one()
    assert rate == Decimal("0.731")
    assert drive(wf, exchange_id) == "completed"
    assert_invariants(wf)
