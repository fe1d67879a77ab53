"""The exchange's steps, each safe under duplicate delivery.

Every step claims the exchange (services.claims), does its work, and in ONE transaction
advances the state, writes its postings, the next outbox message and a timeline event.
Steps without an external call do all of that in a single transaction. The credit step
calls the bank between its claim and its commit, with an idempotency key derived from
(exchange, step), so a retry after a timeout cannot pay twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from bank.client import BankClient, BankError, BankOutcomeUnknown, BankRejected, BankTransfer
from domain import ledger as postings
from domain.fx import NoRate, RateProvider, make_quote
from domain.money import quantize
from domain.states import TERMINAL_STATES, ExchangeState
from jobs import messages
from models import exchanges
from models.base import utcnow
from observability import current_trace_headers
from outbox.failpoints import failpoint
from outbox.writer import enqueue
from services import claims, ledger, timeline
from services.accounts import HOUSE_ACCOUNT_ID
from services.claims import Busy, Claim, LostClaim

log = logging.getLogger("workflow")

S = ExchangeState


class RescuePolicy(StrEnum):
    """What to do when a step's claim expires without a result (its worker died or froze)."""

    #: Run the step again: safe when its external call is idempotent, or it has none.
    RETRY = "retry"
    #: The outcome is unknown and only a person should decide: wait in needs_attention.
    PARK = "park"
    #: Give up; compensate where money moved.
    FAIL = "fail"


@dataclass(frozen=True)
class WorkflowConfig:
    queue: str = "exchanges"
    #: How long a claim protects a step; longer than the bank's connect + read timeouts.
    lease: timedelta = timedelta(seconds=30)
    quote_ttl: timedelta = timedelta(seconds=30)
    #: Bank calls of the credit step before its final-failure path runs.
    credit_max_attempts: int = 5
    #: Per-step replacements of the rescue policies declared beside the steps.
    rescue_overrides: dict[str, RescuePolicy] = field(default_factory=dict)


@dataclass
class Workflow:
    """What the steps need, passed in at the composition root."""

    engine: Engine
    bank: BankClient
    rates: RateProvider
    config: WorkflowConfig = field(default_factory=WorkflowConfig)


@dataclass(frozen=True)
class Delivery:
    """Who runs the step: the exchange, the broker message and the worker."""

    exchange_id: uuid.UUID
    worker: str
    message_id: uuid.UUID | None = None


class StepResult(StrEnum):
    ADVANCED = "advanced"
    #: Already past this step (a duplicate delivery): acknowledged with no effect.
    SKIPPED = "skipped"
    #: The claim was taken over while the step ran; its writes were rolled back.
    LOST_CLAIM = "lost_claim"
    #: The step cannot decide alone; the exchange waits for a person.
    PARKED = "parked"


class StepDeferred(Exception):
    """Try this step again later (the broker's retry, after `delay_ms`)."""

    def __init__(self, reason: str, delay_ms: int | None = None) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Transition:
    """What a step decided: the next state, the columns it sets and what comes next."""

    target: ExchangeState
    outcome: str = "succeeded"
    next_actor: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    detail: dict[str, Any] | None = None


StepBody = Callable[[Connection, Claim, datetime], Transition]


# --- the pattern, written once -------------------------------------------------------


def _claim(wf: Workflow, conn: Connection, d: Delivery, step: str, expected: ExchangeState,
           now: datetime) -> Claim | None:
    held = claims.claim(conn, d.exchange_id, expected=expected, step=step, worker=d.worker,
                        lease=wf.config.lease, now=now)
    if isinstance(held, Busy):
        # Another worker holds the step. Come back when its lease ends: if it died, we
        # take over; if it finished, we find the step done and acknowledge.
        wait_ms = max(100, int((held.claimed_until - now).total_seconds() * 1000) + 100)
        raise StepDeferred(f"{step} is claimed by {held.claimed_by} until {held.claimed_until}", wait_ms)
    return held


def _commit_transition(wf: Workflow, conn: Connection, d: Delivery, held: Claim, t: Transition,
                       now: datetime, started: float) -> None:
    claims.advance(conn, held, t.target, now=now, last_error=t.error, **t.values)
    detail = dict(t.detail or {})
    if t.next_actor:
        # The next step continues this step's trace, so one trace follows the exchange.
        next_id = enqueue(conn, actor=t.next_actor, payload={"exchange_id": str(d.exchange_id)},
                          queue=wf.config.queue, trace_headers=current_trace_headers(), now=now)
        detail["next_message_id"] = str(next_id)
    timeline.record(conn, d.exchange_id, step=held.step, outcome=t.outcome, state=t.target, attempt=held.attempt,
                    worker=d.worker, message_id=d.message_id, error=t.error, detail=detail or None,
                    duration_ms=int((time.monotonic() - started) * 1000), now=now)


def _lost(wf: Workflow, d: Delivery, held: Claim, error: LostClaim) -> StepResult:
    log.warning("lost claim on %s (%s): writes rolled back", d.exchange_id, error)
    with wf.engine.begin() as conn:
        state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == d.exchange_id)).scalar_one()
        timeline.record(conn, d.exchange_id, step=held.step, outcome="lost_claim", state=state,
                        attempt=held.attempt, worker=d.worker, message_id=d.message_id,
                        error=f"claim token {held.token} was superseded; this worker's result was discarded")
    return StepResult.LOST_CLAIM


def run_local_step(wf: Workflow, d: Delivery, step: str, expected: ExchangeState, body: StepBody) -> StepResult:
    """A step with no external call: claim, work and advance in one transaction (one commit)."""
    started = time.monotonic()
    now = utcnow()
    with wf.engine.begin() as conn:
        held = _claim(wf, conn, d, step, expected, now)
        if held is None:
            return StepResult.SKIPPED
        _commit_transition(wf, conn, d, held, body(conn, held, now), now, started)
    return StepResult.ADVANCED


# --- the steps --------------------------------------------------------------------------


def quote(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        try:
            q = make_quote(wf.rates, c.from_currency, c.to_currency, c.amount, now, wf.config.quote_ttl)
        except NoRate as error:
            ledger.release_hold(conn, c.account_id, c.from_currency, c.amount, now)
            return Transition(S.FAILED, "failed", messages.SEND_RECEIPT, error=str(error),
                              detail={"released": str(c.amount)})
        return Transition(S.QUOTED, next_actor=messages.DEBIT_EXCHANGE,
                          values={"rate": q.rate, "to_amount": q.to_amount, "quote_expires_at": q.expires_at},
                          detail={"rate": str(q.rate), "to_amount": str(q.to_amount)})

    return run_local_step(wf, d, "quote", S.PENDING, body)


def debit(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        values: dict[str, Any] = {}
        detail: dict[str, Any] = {"debited": str(c.amount), "currency": c.from_currency}
        if c.quote_expires_at is None or c.quote_expires_at < now:
            # The queue was slow: price again rather than honour a stale rate.
            try:
                q = make_quote(wf.rates, c.from_currency, c.to_currency, c.amount, now, wf.config.quote_ttl)
            except NoRate as error:
                ledger.release_hold(conn, c.account_id, c.from_currency, c.amount, now)
                return Transition(S.FAILED, "failed", messages.SEND_RECEIPT, error=str(error))
            values = {"rate": q.rate, "to_amount": q.to_amount, "quote_expires_at": q.expires_at}
            detail["requoted"] = str(q.rate)
        ledger.consume_hold(conn, c.account_id, c.from_currency, c.amount, now)
        ledger.post(conn, postings.debit(c.account_id, HOUSE_ACCOUNT_ID, c.from_currency, c.amount),
                    exchange_id=c.exchange_id, now=now)
        # Inside the transaction, its row locks held: where a frozen worker must not block the rest.
        failpoint("step.debit.before_commit")
        return Transition(S.DEBITED, next_actor=messages.CREDIT_EXCHANGE, values=values, detail=detail)

    return run_local_step(wf, d, "debit", S.QUOTED, body)


def credit_key(exchange_id: uuid.UUID) -> str:
    """The bank call's idempotency key: the same for every attempt of this step."""
    return f"{exchange_id}:credit"


#: What happens when the credit's claim expires without a result (its worker died or froze
#: past its lease). RETRY is safe here: the bank applies each idempotency key once and
#: replays its answer, so running the step again cannot pay twice.
CREDIT_RESCUE_POLICY = RescuePolicy.RETRY


def credit(wf: Workflow, d: Delivery) -> StepResult:
    """Pay the target amount through the bank, then credit the customer; once, whatever happens."""
    started = time.monotonic()
    now = utcnow()
    policy = wf.config.rescue_overrides.get("credit", CREDIT_RESCUE_POLICY)
    with wf.engine.begin() as conn:
        held = _claim(wf, conn, d, "credit", S.DEBITED, now)
        if held is not None and held.rescued_from is not None:
            timeline.record(conn, d.exchange_id, step="credit", outcome="rescued", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, now=now,
                            error=f"the claim of {held.rescued_from} expired without a result",
                            detail={"policy": policy.value})
    if held is None:
        return StepResult.SKIPPED
    assert held.to_amount is not None, "a debited exchange has a quote"
    key = credit_key(d.exchange_id)
    rescued = held.rescued_from is not None
    if rescued and policy is RescuePolicy.PARK:
        decision = Transition(S.NEEDS_ATTENTION, "parked",
                              error=f"credit interrupted: the claim of {held.rescued_from} expired without a "
                                    "result, and this step's rescue policy is park")
    elif rescued and policy is RescuePolicy.FAIL:
        decision = _final_credit_failure(wf, held, key, f"the claim of {held.rescued_from} expired", unknown=True)
    else:
        try:
            transfer = wf.bank.transfer(key=key, reference=str(d.exchange_id), account=str(held.account_id),
                                        currency=held.to_currency, amount=held.to_amount)
            decision = _credited(held, transfer)
        except BankRejected as error:
            decision = Transition(S.COMPENSATING, "failed", messages.COMPENSATE_EXCHANGE, error=str(error),
                                  detail={"reason": "bank rejected the credit"})
        except BankError as error:
            unknown = held.outcome_unknown or isinstance(error, BankOutcomeUnknown)
            if held.attempt < wf.config.credit_max_attempts:
                return _retry_later(wf, d, held, error, unknown)
            decision = _final_credit_failure(wf, held, key, str(error), unknown)
    failpoint("step.credit.after_bank")
    return _finish_credit(wf, d, held, decision, started)


def _finish_credit(wf: Workflow, d: Delivery, held: Claim, decision: Transition, started: float) -> StepResult:
    """The credit's result, fenced by its claim: credited, compensating or parked."""
    assert held.to_amount is not None
    try:
        with wf.engine.begin() as conn:
            now = utcnow()
            if decision.target is S.CREDITED:
                ledger.add_available(conn, held.account_id, held.to_currency, held.to_amount, now)
                ledger.post(conn, postings.credit(held.account_id, HOUSE_ACCOUNT_ID, held.to_currency,
                                                  held.to_amount), exchange_id=d.exchange_id, now=now)
            _commit_transition(wf, conn, d, held, decision, now, started)
    except LostClaim as error:
        return _lost(wf, d, held, error)
    return StepResult.PARKED if decision.target is S.NEEDS_ATTENTION else StepResult.ADVANCED


def resolve_with_bank(wf: Workflow, d: Delivery) -> StepResult:
    """Settle a parked credit by asking the bank: paid -> credited; never paid -> voided and refunded.

    Leaves the exchange parked (and says why) while the bank cannot answer.
    """
    started = time.monotonic()
    now = utcnow()
    with wf.engine.begin() as conn:
        held = _claim(wf, conn, d, "resolve", S.NEEDS_ATTENTION, now)
    if held is None:
        return StepResult.SKIPPED
    try:
        record = wf.bank.void(key=credit_key(d.exchange_id), reference=str(d.exchange_id))
    except BankError as error:
        with wf.engine.begin() as conn:
            claims.release(conn, held, error=f"bank could not be asked: {error}", outcome_unknown=True, now=utcnow())
            timeline.record(conn, d.exchange_id, step="resolve", outcome="retrying", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, error=str(error))
        raise StepDeferred(f"bank could not be asked: {error}") from None
    if record.status == "applied":
        decision = _credited(held, record)
    else:
        decision = Transition(S.COMPENSATING, "resolved", messages.COMPENSATE_EXCHANGE,
                              detail={"reason": "the bank never applied the credit; voided", "void_id": record.id})
    return _finish_credit(wf, d, held, decision, started)


def _credited(held: Claim, transfer: BankTransfer) -> Transition:
    if transfer.status != "applied" or transfer.amount != held.to_amount or transfer.currency != held.to_currency:
        # The bank's record disagrees with ours: never guess with money.
        return Transition(S.NEEDS_ATTENTION, "parked",
                          error=f"bank record {transfer.id} ({transfer.status} {transfer.amount} "
                                f"{transfer.currency}) does not match the exchange")
    return Transition(S.CREDITED, next_actor=messages.COMPLETE_EXCHANGE,
                      detail={"bank_transfer_id": transfer.id, "replayed": transfer.replayed,
                              "credited": str(held.to_amount), "currency": held.to_currency})


def _retry_later(wf: Workflow, d: Delivery, held: Claim, error: BankError, unknown: bool) -> StepResult:
    try:
        with wf.engine.begin() as conn:
            now = utcnow()
            claims.release(conn, held, error=str(error), outcome_unknown=unknown, now=now)
            timeline.record(conn, d.exchange_id, step=held.step, outcome="retrying", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, error=str(error),
                            detail={"outcome_unknown": unknown, "max_attempts": wf.config.credit_max_attempts},
                            now=now)
    except LostClaim as lost:
        return _lost(wf, d, held, lost)
    raise StepDeferred(f"credit attempt {held.attempt} failed: {error}")


def _final_credit_failure(wf: Workflow, held: Claim, key: str, error: str, unknown: bool) -> Transition:
    """Give up on the credit: refund, unless the bank may have paid, in which case ask it."""
    if not unknown:
        # Every answer said "not applied": the refund is safe.
        return Transition(S.COMPENSATING, "failed", messages.COMPENSATE_EXCHANGE, error=error,
                          detail={"reason": f"bank failed {held.attempt} times"})
    try:
        record = wf.bank.void(key=key, reference=str(held.exchange_id))
    except BankError as void_error:
        return Transition(S.NEEDS_ATTENTION, "parked",
                          error=f"bank outcome unknown after {held.attempt} attempts ({error}); "
                                f"could not ask the bank: {void_error}")
    if record.status == "applied":
        return _credited(held, record)
    return Transition(S.COMPENSATING, "failed", messages.COMPENSATE_EXCHANGE, error=error,
                      detail={"reason": "bank voided the unanswered credit", "void_id": record.id})


def complete(wf: Workflow, d: Delivery) -> StepResult:
    return run_local_step(wf, d, "complete", S.CREDITED,
                          lambda conn, c, now: Transition(S.COMPLETED, next_actor=messages.SEND_RECEIPT))


def compensate(wf: Workflow, d: Delivery) -> StepResult:
    def body(conn: Connection, c: Claim, now: datetime) -> Transition:
        ledger.add_available(conn, c.account_id, c.from_currency, c.amount, now)
        ledger.post(conn, postings.refund(c.account_id, HOUSE_ACCOUNT_ID, c.from_currency, c.amount),
                    exchange_id=c.exchange_id, now=now)
        return Transition(S.REFUNDED, "compensated", messages.SEND_RECEIPT,
                          detail={"refunded": str(c.amount), "currency": c.from_currency})

    return run_local_step(wf, d, "compensate", S.COMPENSATING, body)


def send_receipt(wf: Workflow, d: Delivery) -> StepResult:
    """Tell the customer how the exchange ended; once, however often the message comes."""
    now = utcnow()
    with wf.engine.begin() as conn:
        row = conn.execute(
            update(exchanges)
            .where(exchanges.c.id == d.exchange_id, exchanges.c.receipt_sent_at.is_(None),
                   exchanges.c.state.in_([s.value for s in TERMINAL_STATES]))
            .values(receipt_sent_at=now)
            .returning(exchanges.c.state, exchanges.c.account_id, exchanges.c.amount, exchanges.c.from_currency,
                       exchanges.c.to_amount, exchanges.c.to_currency)
        ).first()
        if row is None:
            return StepResult.SKIPPED
        text = f"exchange {d.exchange_id} {row.state}: {quantize(row.amount, row.from_currency)} {row.from_currency}"
        if row.state == S.COMPLETED:
            text += f" -> {quantize(row.to_amount, row.to_currency)} {row.to_currency}"
        timeline.record(conn, d.exchange_id, step="receipt", outcome="sent", state=row.state, attempt=1,
                        worker=d.worker, message_id=d.message_id, detail={"text": text}, now=now)
    log.info("receipt to account %s: %s", row.account_id, text)
    return StepResult.ADVANCED


#: Actor name -> step function. The actors are thin wrappers over these.
STEPS: dict[str, Callable[[Workflow, Delivery], StepResult]] = {
    messages.QUOTE_EXCHANGE: quote,
    messages.DEBIT_EXCHANGE: debit,
    messages.CREDIT_EXCHANGE: credit,
    messages.COMPLETE_EXCHANGE: complete,
    messages.COMPENSATE_EXCHANGE: compensate,
    messages.SEND_RECEIPT: send_receipt,
    messages.RESOLVE_EXCHANGE: resolve_with_bank,
}
