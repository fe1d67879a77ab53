"""The step graph an exchange travels: a message hop only where an external call separates work.

Accept writes the quote's message. The quote and the debit commit together, with the credit's
message and the credit's claim; the same worker then runs the credit at once, and its result
commits with complete and the receipt and marks the credit's message done. That message and
that claim both last one lease, so a worker that dies in between loses nothing: the relay sends
the message once the claim has expired, and the credit is rescued by its policy. A happy
exchange is one relayed message (none when the web sends it itself: test_direct_send.py) and,
in the worker, two transactions; each step keeps its own claim (fencing token), its own
transition check and its own timeline entry.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from domain import states as machine
from harness import invariants
from models import exchange_events, exchanges, ledger_entries, outbox_messages
from models.base import utcnow
from outbox import failpoints
from services.workflow import STEPS, Delivery, StepResult, Workflow
from tests.ops_support import handing_off, stepwise
from tests.support.engine_events import counting
from tests.workflow_support import accept, state_of

#: What the design says a happy exchange costs: its relayed messages, and the worker's transactions
#: (the quote+debit with the credit's claim, before the bank call; its result with complete and receipt).
HOPS_PER_EXCHANGE = 1
WORKER_TRANSACTIONS_PER_EXCHANGE = 2


@pytest.fixture
def wf(wf: Workflow) -> Workflow:
    return handing_off(wf)


def deliver_outbox(wf: Workflow, *, twice: bool = False, commits: list[int] | None = None,
                   due_or_not: bool = True) -> list[str]:
    """Deliver every unpublished outbox message (and what it leads to), oldest first, as a worker
    would; `twice` delivers each message a second time. Returns the actors delivered; `commits`
    gets the transactions the steps committed. A handed-off message waits a lease before the relay
    may send it: `due_or_not` sends it anyway (the lease has passed), else only what is due."""
    delivered = []
    while True:
        with wf.engine.begin() as conn:
            query = select(outbox_messages).where(outbox_messages.c.published_at.is_(None))
            if not due_or_not:
                query = query.where(outbox_messages.c.available_at <= utcnow())
            row = conn.execute(query.order_by(outbox_messages.c.created_at, outbox_messages.c.id).limit(1)).first()
            if row is None:
                return delivered
            conn.execute(update(outbox_messages).where(outbox_messages.c.id == row.id)
                         .values(published_at=func.now()))
        delivery = Delivery(uuid.UUID(row.payload["exchange_id"]), "graph-worker", row.id,
                            epoch=row.payload.get("epoch", 0))
        with counting(wf.engine, "commit") as counted:
            for _ in range(2 if twice else 1):
                STEPS[row.actor](wf, delivery)
        if commits is not None:
            commits[0] += counted[0]
        delivered.append(row.actor)


def test_a_happy_exchange_is_one_relayed_message_and_two_worker_transactions(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, funded_account, "100.00")
    commits = [0]
    delivered = deliver_outbox(wf, commits=commits)
    assert delivered == [machine.QUOTE.actor]
    assert len(delivered) == HOPS_PER_EXCHANGE
    with wf.engine.connect() as conn:
        credit_message = conn.execute(select(outbox_messages).where(
            outbox_messages.c.actor == machine.CREDIT.actor)).one()
    # Written with the debit, due a lease later, and marked done by the worker that ran it.
    assert credit_message.available_at - credit_message.created_at == wf.config.lease
    assert credit_message.published_at is not None
    assert commits[0] == WORKER_TRANSACTIONS_PER_EXCHANGE
    assert state_of(wf.engine, exchange_id) == "completed"
    with wf.engine.connect() as conn:
        steps = conn.execute(select(exchange_events.c.step, exchange_events.c.outcome)
                             .where(exchange_events.c.exchange_id == exchange_id).order_by(exchange_events.c.id)).all()
    assert [tuple(s) for s in steps] == [("accept", "accepted"), ("quote", "succeeded"), ("debit", "succeeded"),
                                         ("credit", "succeeded"), ("complete", "succeeded"), ("receipt", "sent")]
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_stepwise_the_same_exchange_is_five_messages(wf: Workflow, funded_account: uuid.UUID) -> None:
    accept(wf.engine, funded_account, "100.00")
    assert len(deliver_outbox(stepwise(wf))) == 5  # what fusing and handing off save, on the same code


def test_without_the_hand_off_it_is_two_messages(wf: Workflow, funded_account: uuid.UUID) -> None:
    accept(wf.engine, funded_account, "100.00")
    no_handoff = dataclasses.replace(wf, config=dataclasses.replace(wf.config, continue_inline=False))
    assert deliver_outbox(no_handoff) == [machine.QUOTE.actor, machine.CREDIT.actor]


def test_a_worker_that_dies_before_the_handed_off_credit_loses_nothing_the_relay_sends_it_a_lease_later(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, funded_account, "90.00")
    failpoints.load("step.handoff.before_continue=raise")  # in a worker process: kill (test_workflow_processes)
    try:
        # The credit's message is not due before its lease has passed.
        assert deliver_outbox(wf, due_or_not=False) == [machine.QUOTE.actor]
    finally:
        failpoints.load("")
    assert state_of(wf.engine, exchange_id) == "debited"
    with wf.engine.begin() as conn:  # the lease passes: the dead worker's credit claim expires with it
        conn.execute(update(exchanges).where(exchanges.c.id == exchange_id)
                     .values(claimed_until=utcnow() - timedelta(seconds=1)))
    assert deliver_outbox(wf) == [machine.CREDIT.actor]  # then the relay's copy, a rescue (policy: retry)
    assert state_of(wf.engine, exchange_id) == "completed"
    with wf.engine.connect() as conn:
        outcomes = conn.execute(select(exchange_events.c.outcome).where(
            exchange_events.c.exchange_id == exchange_id, exchange_events.c.step == "credit")).scalars().all()
    assert outcomes[-2:] == ["rescued", "succeeded"]  # after the injected error ("error"; a kill writes none)
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_each_message_delivered_twice_moves_money_once(wf: Workflow, funded_account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, funded_account, "80.00")
    assert deliver_outbox(wf, twice=True) == [machine.QUOTE.actor]
    # The relay's copy of the handed-off credit too (a lease passed while the worker ran it).
    with wf.engine.connect() as conn:
        credit_id = conn.execute(select(outbox_messages.c.id).where(
            outbox_messages.c.actor == machine.CREDIT.actor)).scalar_one()
    assert STEPS[machine.CREDIT.actor](wf, Delivery(exchange_id, "late", credit_id)) is StepResult.SKIPPED
    assert state_of(wf.engine, exchange_id) == "completed"
    assert len(wf.bank.all_applied()) == 1
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_a_crash_inside_the_fused_debit_rolls_the_quote_back_with_it_and_the_retry_completes(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    exchange_id = accept(wf.engine, funded_account, "120.00")
    failpoints.load("step.debit.before_commit=raise")
    try:
        with pytest.raises(failpoints.InjectedFault):
            STEPS[machine.QUOTE.actor](wf, Delivery(exchange_id, "doomed", uuid.uuid4()))
    finally:
        failpoints.load("")
    # Nothing half-done: still pending, no posting, no timeline entry of the steps, no next message.
    assert state_of(wf.engine, exchange_id) == "pending"
    with wf.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_entries)
                            .where(ledger_entries.c.exchange_id == exchange_id)).scalar_one() == 0
        steps = conn.execute(select(exchange_events.c.step).where(exchange_events.c.exchange_id == exchange_id)).all()
    assert [s for (s,) in steps] == ["accept"]

    assert deliver_outbox(wf) == [machine.QUOTE.actor]  # the broker's retry of it
    assert state_of(wf.engine, exchange_id) == "completed"
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok


def test_a_failed_quote_and_a_refund_take_their_receipt_in_the_same_transaction(
        wf: Workflow, funded_account: uuid.UUID) -> None:
    wf.bank.set_faults(down=True)
    try:
        exchange_id = accept(wf.engine, funded_account, "300.00")
        for _ in range(wf.config.credit_max_attempts + 1):
            try:
                deliver_outbox(wf)
            except Exception:  # the credit's deferrals: the broker would retry the same message
                with wf.engine.begin() as conn:
                    conn.execute(update(outbox_messages).where(outbox_messages.c.actor == machine.CREDIT.actor)
                                 .values(published_at=None))
    finally:
        wf.bank.reset_faults()
    assert state_of(wf.engine, exchange_id) == "refunded"
    with wf.engine.connect() as conn:
        actors = {a for (a,) in conn.execute(select(outbox_messages.c.actor))}
        sent = conn.execute(select(func.count()).select_from(exchange_events).where(
            exchange_events.c.exchange_id == exchange_id, exchange_events.c.step == "receipt")).scalar_one()
    assert actors == {machine.QUOTE.actor, machine.CREDIT.actor}  # compensate and receipt had no message
    assert sent == 1
    assert STEPS[machine.RECEIPT.actor](wf, Delivery(exchange_id, "late", uuid.uuid4())) is StepResult.SKIPPED
    assert invariants.check(wf.engine, bank=wf.bank, settled=True).ok
