"""The steps with no external call, and how a step's decision is committed.

Each local step claims, works and advances in one transaction. When a step's next step is
local too, it runs in that same transaction instead of behind a message: quote and debit
commit together, and the credit's result commits with complete and the receipt. Each keeps
its own claim (fencing token), its own transition check and its own timeline entry; only
the hop through outbox, relay and broker is gone, because nothing external separates them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, update

from domain import ledger as postings
from domain import states as machine
from domain.fx import NoRate, make_quote
from domain.money import quantize
from domain.states import TERMINAL_STATES, ExchangeState, Step, step_payload
from infra.observability import current_trace_headers
from models import exchanges
from models.base import utcnow
from outbox import writer
from outbox.failpoints import failpoint
from outbox.writer import enqueue
from services import claims, ledger, timeline
from services.claims import Claim
from services.webhooks import events as webhook_events
from services.workflow.context import (
    Delivery,
    Handoff,
    StepBody,
    StepDeferred,
    StepFunction,
    StepResult,
    Transition,
    Workflow,
)
from services.workflow.runner import claim_or_defer, record_failure

log = logging.getLogger("workflow")

S = ExchangeState


def _priced(wf: Workflow, c: Claim, now: datetime) -> dict[str, Any]:
    """The quote's columns; NoRate when the provider has no rate for the pair."""
    q = make_quote(wf.rates, c.from_currency, c.to_currency, c.amount, now, wf.config.quote_ttl)
    return {"rate": q.rate, "to_amount": q.to_amount, "quote_expires_at": q.expires_at}


def _no_rate(conn: Connection, c: Claim, now: datetime, error: NoRate, **detail: Any) -> Transition:
    ledger.release_hold(conn, c.account_id, c.from_currency, c.amount, now)
    return Transition(S.FAILED, "failed", machine.RECEIPT, error=str(error), detail=detail or None,
                      values={"failure_code": "no_rate"})


def _quote(wf: Workflow) -> StepBody:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        if c.quote_id is not None:  # priced when the customer took the quote: that rate stands
            return Transition(S.QUOTED, next_step=machine.DEBIT, detail={
                "rate": str(c.rate), "to_amount": str(c.to_amount), "quote_id": str(c.quote_id)})
        try:
            values = _priced(wf, c, now)
        except NoRate as error:
            return _no_rate(conn, c, now, error, released=str(c.amount))
        return Transition(S.QUOTED, next_step=machine.DEBIT, values=values,
                          detail={"rate": str(values["rate"]), "to_amount": str(values["to_amount"])})

    return body


def _debit(wf: Workflow) -> StepBody:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        values: dict[str, Any] = {}
        detail: dict[str, Any] = {"debited": str(c.amount), "currency": c.from_currency}
        if c.quote_id is None and (c.quote_expires_at is None or c.quote_expires_at < now):
            # The queue was slow: price again rather than honour a stale rate.
            try:
                values = _priced(wf, c, now)
            except NoRate as error:
                return _no_rate(conn, c, now, error)
            detail["requoted"] = str(values["rate"])
        ledger.consume_hold(conn, c.account_id, c.from_currency, c.amount, now)
        ledger.post(conn, postings.debit(c.account_id, postings.HOUSE_ACCOUNT_ID, c.from_currency, c.amount),
                    exchange_id=c.exchange_id, now=now)
        # Inside the transaction, its row locks held: where a frozen worker must not block the rest.
        failpoint("step.debit.before_commit")
        return Transition(S.DEBITED, next_step=machine.CREDIT, values=values, detail=detail)

    return body


def _complete(wf: Workflow) -> StepBody:
    return lambda conn, c, now: Transition(S.COMPLETED, next_step=machine.RECEIPT)


def _compensate(wf: Workflow) -> StepBody:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        ledger.add_available(conn, c.account_id, c.from_currency, c.amount, now)
        ledger.post(conn, postings.refund(c.account_id, postings.HOUSE_ACCOUNT_ID, c.from_currency, c.amount),
                    exchange_id=c.exchange_id, now=now)
        return Transition(S.REFUNDED, "compensated", machine.RECEIPT, keeps_last_error=True,
                          detail={"refunded": str(c.amount), "currency": c.from_currency})

    return body


#: Built once: the receipt's compare-and-set on `receipt_sent_at`.
_MARK_RECEIPT_SENT = (
    update(exchanges)
    .where(exchanges.c.id == bindparam("m_id"), exchanges.c.receipt_sent_at.is_(None),
           exchanges.c.state.in_([s.value for s in TERMINAL_STATES]))
    .values(receipt_sent_at=bindparam("m_now"))
    .returning(exchanges.c.state, exchanges.c.account_id, exchanges.c.amount, exchanges.c.from_currency,
               exchanges.c.to_amount, exchanges.c.to_currency)
)


def send_receipt(wf: Workflow, d: Delivery) -> StepResult:
    """Tell the customer how the exchange ended; once, however often the message comes."""
    with wf.engine.begin() as conn:
        text = _receipt(wf, conn, d, utcnow())
    if text is None:
        return StepResult.SKIPPED
    log.debug("receipt for exchange %s: %s", d.exchange_id, text)
    return StepResult.ADVANCED


class Ended(NamedTuple):
    """What the receipt tells of a terminal exchange (the columns _MARK_RECEIPT_SENT returns)."""

    state: str
    account_id: uuid.UUID
    amount: Decimal
    from_currency: str
    to_amount: Decimal | None
    to_currency: str


def _receipt(wf: Workflow, conn: Connection, d: Delivery, now: datetime) -> str | None:
    """The end of the exchange, told once (`_tell`), in the caller's transaction."""
    row = conn.execute(_MARK_RECEIPT_SENT, {"m_id": d.exchange_id, "m_now": now}).first()
    if row is None:
        return None
    return _tell(wf, conn, d, Ended(*row), now)


def _tell(wf: Workflow, conn: Connection, d: Delivery, row: Ended, now: datetime) -> str:
    """The receipt: its webhook event (to every endpoint of its customer, through the outbox) and
    its timeline line; `receipt_sent_at` is already set in this transaction."""
    text = f"exchange {d.exchange_id} {row.state}: {quantize(row.amount, row.from_currency)} {row.from_currency}"
    if row.state == S.COMPLETED:
        assert row.to_amount is not None
        text += f" -> {quantize(row.to_amount, row.to_currency)} {row.to_currency}"
    event_id = webhook_events.emit(conn, d.exchange_id, row.account_id, row.state, queue=wf.config.queue, now=now)
    detail = {"text": text, **({"webhook_event": event_id} if event_id else {})}
    timeline.record(conn, d.exchange_id, step=machine.RECEIPT.name, outcome="sent", state=row.state, attempt=1,
                    worker=d.worker, message_id=d.message_id, detail=detail, now=now)
    return text


#: The local steps' bodies: what runs behind a message, or in the previous step's transaction.
_BODIES: dict[Step, Callable[[Workflow], StepBody]] = {
    machine.QUOTE: _quote, machine.DEBIT: _debit, machine.COMPLETE: _complete, machine.COMPENSATE: _compensate,
}
#: The steps that can follow another in its transaction (no external call between them).
LOCAL_STEPS = frozenset({*_BODIES, machine.RECEIPT})


def run_local_step(wf: Workflow, d: Delivery, step: Step) -> StepResult:
    """A step with no external call: claim, work and advance in one transaction (one commit);
    then, when that led to an external step, run it at once (see `continue_inline`)."""
    started = time.monotonic()
    now = utcnow()
    with wf.engine.begin() as conn, timeline.batched(conn):
        held = claim_or_defer(wf, conn, d, step, now)
        if held is None:
            return StepResult.SKIPPED
        if d.inline and d.message_id is not None:  # its writer sent it: the relay must not
            writer.take(conn, d.message_id, now=now)
        handoff = commit_transition(wf, conn, d, held, _BODIES[step](wf)(conn, held, now), now, started)
    if handoff is not None:
        _continue(wf, handoff)
    return StepResult.ADVANCED


#: The external steps' functions, for a worker continuing at once (registry.py fills it: it
#: knows every step's function, and credit.py imports this module).
CONTINUATIONS: dict[Step, StepFunction] = {}


def _continue(wf: Workflow, handoff: Handoff) -> None:
    """Run the handed-off step now. Whatever stops it, its outbox message is still there, due in
    one lease: the relay then sends it and a worker retries it as it would any message."""
    try:
        failpoint("step.handoff.before_continue")  # the worker dies between the two: the relay sends it
        CONTINUATIONS[handoff.step](wf, handoff.delivery)
    except StepDeferred as deferred:
        log.debug("%s on %s continues through the outbox: %s", handoff.step.name, handoff.delivery.exchange_id,
                  deferred)
    except Exception as error:
        record_failure(wf, handoff.delivery, handoff.step, error)
        log.warning("%s on %s failed; its message retries it", handoff.step.name, handoff.delivery.exchange_id,
                    exc_info=True)


def quote(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, machine.QUOTE)


def debit(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, machine.DEBIT)


def complete(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, machine.COMPLETE)


def compensate(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, machine.COMPENSATE)


def commit_transition(wf: Workflow, conn: Connection, d: Delivery, held: Claim, t: Transition,
                      now: datetime, started: float) -> Handoff | None:
    """Advance (fenced by the claim) and record the timeline entry; then the next step runs here
    when it is local, or its message is enqueued in this transaction when it is not. Returns the
    external step this worker may run at once, if any, already claimed in this transaction."""
    values = {**({} if t.keeps_last_error and t.error is None else {"last_error": t.error}), **t.values}
    nxt = t.next_step
    inline = nxt is not None and wf.config.fuse_local_steps and nxt in LOCAL_STEPS
    # Handed off: the relay may send it only once this worker had a lease's time to run it.
    hand_off = nxt is not None and not inline and wf.config.continue_inline and nxt in CONTINUATIONS
    if inline and nxt is machine.RECEIPT:
        values["receipt_sent_at"] = now  # the receipt's mark rides in this move; it is told below
    next_held = None
    if nxt is not None and (hand_off or (inline and nxt is not machine.RECEIPT)):
        assert nxt.runs_in is t.target, f"{nxt.name} does not run in {t.target}"
        # The next step's claim, in the same statement as this step's move: a handed-off step's
        # claim commits with this transaction, its lease running from now, like its message's delay.
        next_held = claims.advance_and_claim(conn, held, t.target, step=nxt.name, worker=d.worker,
                                             lease=wf.config.lease, now=now, **values)
        epoch = next_held.epoch
    else:
        epoch = claims.advance(conn, held, t.target, now=now, **values)
    detail = dict(t.detail or {})
    handoff = None
    if nxt is not None and not inline:
        # The next step continues this step's trace, so one trace follows the exchange.
        next_id = enqueue(conn, actor=nxt.actor, payload=step_payload(d.exchange_id, epoch),
                          queue=wf.config.queue, trace_headers=current_trace_headers(), now=now,
                          delay=wf.config.lease if hand_off else None)
        detail["next_message_id"] = str(next_id)
        if hand_off:
            handoff = Handoff(nxt, Delivery(d.exchange_id, d.worker, next_id, epoch=epoch, inline=True,
                                            claimed=next_held))
    # Parked for a person: the customer's endpoints hear of it now.
    if t.target is S.NEEDS_ATTENTION and (event := webhook_events.emit(
            conn, d.exchange_id, held.account_id, t.target, queue=wf.config.queue, now=now)):
        detail["webhook_event"] = event
    timeline.record(conn, d.exchange_id, step=held.step, outcome=t.outcome, state=t.target, attempt=held.attempt,
                    worker=d.worker, message_id=d.message_id, error=t.error, detail=detail or None,
                    duration_ms=int((time.monotonic() - started) * 1000), now=now)
    if not inline:
        return handoff
    next_delivery = dataclasses.replace(d, epoch=epoch, inline=False)
    if next_held is None:  # the receipt, of the terminal state this move reached
        _tell(wf, conn, next_delivery, Ended(t.target, held.account_id, held.amount, held.from_currency,
                                             t.values.get("to_amount", held.to_amount), held.to_currency), now)
        return None
    # `next_held`'s step, in this transaction, which has just moved the exchange into its state.
    assert nxt is not None
    return commit_transition(wf, conn, next_delivery, next_held, _BODIES[nxt](wf)(conn, next_held, now), now,
                             time.monotonic())
