"""The steps with no external call: each claims, works and advances in one transaction."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update

from domain import ledger as postings
from domain import states as machine
from domain.fx import NoRate, make_quote
from domain.money import quantize
from domain.states import TERMINAL_STATES, ExchangeState
from models import exchanges
from models.base import utcnow
from outbox.failpoints import failpoint
from services import ledger, timeline
from services.claims import Claim
from services.workflow.context import Delivery, StepResult, Transition, Workflow
from services.workflow.runner import run_local_step

log = logging.getLogger("workflow")

S = ExchangeState


def _priced(wf: Workflow, c: Claim, now: datetime) -> dict[str, Any]:
    """The quote's columns; NoRate when the provider has no rate for the pair."""
    q = make_quote(wf.rates, c.from_currency, c.to_currency, c.amount, now, wf.config.quote_ttl)
    return {"rate": q.rate, "to_amount": q.to_amount, "quote_expires_at": q.expires_at}


def _no_rate(conn: Connection, c: Claim, now: datetime, error: NoRate, **detail: Any) -> Transition:
    ledger.release_hold(conn, c.account_id, c.from_currency, c.amount, now)
    return Transition(S.FAILED, "failed", machine.RECEIPT, error=str(error), detail=detail or None)


def quote(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        try:
            values = _priced(wf, c, now)
        except NoRate as error:
            return _no_rate(conn, c, now, error, released=str(c.amount))
        return Transition(S.QUOTED, next_step=machine.DEBIT, values=values,
                          detail={"rate": str(values["rate"]), "to_amount": str(values["to_amount"])})

    return run_local_step(wf, d, machine.QUOTE, body)


def debit(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        values: dict[str, Any] = {}
        detail: dict[str, Any] = {"debited": str(c.amount), "currency": c.from_currency}
        if c.quote_expires_at is None or c.quote_expires_at < now:
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

    return run_local_step(wf, d, machine.DEBIT, body)


def complete(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, machine.COMPLETE,
                          lambda conn, c, now: Transition(S.COMPLETED, next_step=machine.RECEIPT))


def compensate(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        ledger.add_available(conn, c.account_id, c.from_currency, c.amount, now)
        ledger.post(conn, postings.refund(c.account_id, postings.HOUSE_ACCOUNT_ID, c.from_currency, c.amount),
                    exchange_id=c.exchange_id, now=now)
        return Transition(S.REFUNDED, "compensated", machine.RECEIPT, keeps_last_error=True,
                          detail={"refunded": str(c.amount), "currency": c.from_currency})

    return run_local_step(wf, d, machine.COMPENSATE, body)


#: Built once: the receipt's compare-and-set on `receipt_sent_at`.
_MARK_RECEIPT_SENT = (
    update(exchanges)
    .where(exchanges.c.receipt_sent_at.is_(None), exchanges.c.state.in_([s.value for s in TERMINAL_STATES]))
    .returning(exchanges.c.state, exchanges.c.account_id, exchanges.c.amount, exchanges.c.from_currency,
               exchanges.c.to_amount, exchanges.c.to_currency)
)


def send_receipt(wf: Workflow, d: Delivery) -> StepResult:
    """Tell the customer how the exchange ended; once, however often the message comes."""
    now = utcnow()
    with wf.engine.begin() as conn:
        row = conn.execute(
            _MARK_RECEIPT_SENT.where(exchanges.c.id == d.exchange_id).values(receipt_sent_at=now)
        ).first()
        if row is None:
            return StepResult.SKIPPED
        text = f"exchange {d.exchange_id} {row.state}: {quantize(row.amount, row.from_currency)} {row.from_currency}"
        if row.state == S.COMPLETED:
            text += f" -> {quantize(row.to_amount, row.to_currency)} {row.to_currency}"
        timeline.record(conn, d.exchange_id, step=machine.RECEIPT.name, outcome="sent", state=row.state, attempt=1,
                        worker=d.worker, message_id=d.message_id, detail={"text": text}, now=now)
    log.info("receipt to account %s: %s", row.account_id, text)
    return StepResult.ADVANCED
