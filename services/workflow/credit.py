"""The credit: the one step with an external call, and the parked credit's resolution.

The credit claims the exchange, calls the bank with an idempotency key derived from
(exchange, step), and commits its result fenced by its claim: a retry after a timeout
cannot pay twice, and a worker that lost its claim cannot write.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from sqlalchemy import Connection

from bank.client import BankError, BankOutcomeUnknown, BankRejected, BankTransfer
from domain import ledger as postings
from domain import states as machine
from domain.states import ExchangeState, RescuePolicy
from infra.observability import alert
from models.base import utcnow
from outbox import writer
from outbox.failpoints import failpoint
from services import claims, ledger, timeline
from services.claims import Claim, LostClaim
from services.workflow.context import Delivery, StepDeferred, StepResult, Transition, Workflow
from services.workflow.local_steps import commit_transition
from services.workflow.runner import claim_or_defer, record_lost

S = ExchangeState


def credit_key(exchange_id: uuid.UUID) -> str:
    """The bank call's idempotency key: the same for every attempt of this step."""
    return f"{exchange_id}:credit"


def credit(wf: Workflow, d: Delivery) -> StepResult:
    """Pay the target amount through the bank, then credit the customer; once, whatever happens."""
    started = time.monotonic()
    now = utcnow()
    policy = wf.config.rescue_policy(machine.CREDIT)
    held = d.claimed or _claim(wf, d, policy, now)
    if held is None:
        return StepResult.SKIPPED
    key = credit_key(d.exchange_id)
    if held.rescued_from is not None and policy is RescuePolicy.PARK:
        decision = Transition(S.NEEDS_ATTENTION, "parked",
                              error=f"credit interrupted: the claim of {held.rescued_from} expired without a "
                                    "result, and this step's rescue policy is park")
    elif held.rescued_from is not None and policy is RescuePolicy.FAIL:
        decision = _final_failure(wf, held, key, f"the claim of {held.rescued_from} expired", unknown=True,
                                  code="interrupted")
    else:
        try:
            decision = _pay(wf, held, key)
        except Exception as raised:
            error = _as_bank_error(raised, d)
            unknown = held.outcome_unknown or isinstance(error, BankOutcomeUnknown)
            if held.attempt < wf.config.credit_max_attempts:
                return _retry_later(wf, d, held, error, unknown)
            decision = _final_failure(wf, held, key, str(error), unknown)
    failpoint("step.credit.after_bank")
    return _finish(wf, d, held, decision, started)


def _claim(wf: Workflow, d: Delivery, policy: RescuePolicy, now: datetime) -> Claim | None:
    """The credit's claim, in a transaction of its own (a hand-off brings the one its predecessor took)."""
    with wf.engine.begin() as conn:
        held = claim_or_defer(wf, conn, d, machine.CREDIT, now)
        if held is not None and held.rescued_from is not None:
            timeline.record(conn, d.exchange_id, step=machine.CREDIT.name, outcome="rescued", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, now=now,
                            error=f"the claim of {held.rescued_from} expired without a result",
                            detail={"policy": policy.value})
    return held


def _as_bank_error(raised: Exception, d: Delivery) -> BankError:
    """What the bank call raised, as a bank error: anything unforeseen (a bug, an answer nobody
    expected) is an unknown outcome, counted against the attempt budget like a timeout."""
    if isinstance(raised, BankError):
        return raised
    alert(raised, exchange_id=d.exchange_id, step=machine.CREDIT.actor)
    return BankOutcomeUnknown(f"unexpected {type(raised).__name__} around the bank call: {raised}")


def _pay(wf: Workflow, held: Claim, key: str) -> Transition:
    """The bank call; a refusal is a decision (compensate), any other failure raises BankError."""
    assert held.to_amount is not None, "a debited exchange has a quote"
    try:
        transfer = wf.bank.transfer(key=key, reference=str(held.exchange_id), account=str(held.account_id),
                                    currency=held.to_currency, amount=held.to_amount)
    except BankRejected as error:
        return Transition(S.COMPENSATING, "failed", machine.COMPENSATE, error=str(error),
                          detail={"reason": "bank rejected the credit"}, values={"failure_code": "bank_rejected"})
    return _credited(held, transfer)


def _finish(wf: Workflow, d: Delivery, held: Claim, decision: Transition, started: float) -> StepResult:
    """The credit's result, fenced by its claim: credited, compensating or parked."""
    assert held.to_amount is not None
    if decision.target is S.NEEDS_ATTENTION and held.state is S.NEEDS_ATTENTION:
        return _stay_parked(wf, d, held, decision)
    try:
        with wf.engine.begin() as conn, timeline.batched(conn):
            now = utcnow()
            if decision.target is S.CREDITED:
                ledger.add_available(conn, held.account_id, held.to_currency, held.to_amount, now)
                ledger.post(conn, postings.credit(held.account_id, postings.HOUSE_ACCOUNT_ID, held.to_currency,
                                                  held.to_amount), exchange_id=d.exchange_id, now=now)
            _take_handed_off(conn, d, now)
            commit_transition(wf, conn, d, held, decision, now, started)
    except LostClaim as error:
        return record_lost(wf, d, held, error)
    _alert_if_a_person_must_act(d, held, decision)
    return StepResult.PARKED if decision.target is S.NEEDS_ATTENTION else StepResult.ADVANCED


def _take_handed_off(conn: Connection, d: Delivery, now: datetime) -> None:
    """A step run at once by the worker that wrote its message: that message is done with too."""
    if d.inline and d.message_id is not None:
        writer.take(conn, d.message_id, now=now)


def _alert_if_a_person_must_act(d: Delivery, held: Claim, decision: Transition) -> None:
    """After the commit: a parked exchange, or a refund because the bank failed, is an on-call event."""
    if decision.target is S.NEEDS_ATTENTION:
        alert(f"exchange parked in needs_attention: {decision.error}", exchange_id=d.exchange_id,
              step=machine.STEP_BY_NAME[held.step].actor, attempt=held.attempt)
    elif decision.target is S.COMPENSATING and decision.outcome == "failed":
        alert(f"exchange refunded after the bank failed: {decision.error}", exchange_id=d.exchange_id,
              step=machine.STEP_BY_NAME[held.step].actor, attempt=held.attempt,
              reason=(decision.detail or {}).get("reason"))


def _stay_parked(wf: Workflow, d: Delivery, held: Claim, decision: Transition) -> StepResult:
    """A parked exchange the bank's record still does not settle: it stays parked, says why, and
    gives its claim back (there is no arrow from parked to parked: nothing moved)."""
    try:
        with wf.engine.begin() as conn:
            now = utcnow()
            _take_handed_off(conn, d, now)
            claims.release(conn, held, error=decision.error or "still parked", outcome_unknown=False, now=now)
            timeline.record(conn, d.exchange_id, step=held.step, outcome="parked", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, error=decision.error,
                            now=now)
    except LostClaim as error:
        return record_lost(wf, d, held, error)
    return StepResult.PARKED


def resolve_with_bank(wf: Workflow, d: Delivery) -> StepResult:
    """Settle a parked credit by asking the bank: paid -> credited; never paid -> voided and refunded.

    Leaves the exchange parked (and says why) while the bank cannot answer.
    """
    started = time.monotonic()
    now = utcnow()
    with wf.engine.begin() as conn:
        held = claim_or_defer(wf, conn, d, machine.RESOLVE, now)
    if held is None:
        return StepResult.SKIPPED
    try:
        record = wf.bank.void(key=credit_key(d.exchange_id), reference=str(d.exchange_id))
    except BankError as error:
        with wf.engine.begin() as conn:
            claims.release(conn, held, error=f"bank could not be asked: {error}", outcome_unknown=True, now=utcnow())
            timeline.record(conn, d.exchange_id, step=machine.RESOLVE.name, outcome="retrying", state=held.state,
                            attempt=held.attempt, worker=d.worker, message_id=d.message_id, error=str(error))
        raise StepDeferred(f"bank could not be asked: {error}") from None
    if record.status == "applied":
        decision = _credited(held, record)
    else:
        decision = Transition(S.COMPENSATING, "resolved", machine.COMPENSATE,
                              detail={"reason": "the bank never applied the credit; voided", "void_id": record.id},
                              values={"failure_code": "bank_unconfirmed"})
    return _finish(wf, d, held, decision, started)


def _credited(held: Claim, transfer: BankTransfer) -> Transition:
    if transfer.status != "applied" or transfer.amount != held.to_amount or transfer.currency != held.to_currency:
        # The bank's record disagrees with ours: never guess with money.
        return Transition(S.NEEDS_ATTENTION, "parked",
                          error=f"bank record {transfer.id} ({transfer.status} {transfer.amount} "
                                f"{transfer.currency}) does not match the exchange")
    return Transition(S.CREDITED, next_step=machine.COMPLETE,
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
        return record_lost(wf, d, held, lost)
    raise StepDeferred(f"credit attempt {held.attempt} failed: {error}")


def _final_failure(wf: Workflow, held: Claim, key: str, error: str, unknown: bool,
                   code: str = "bank_unconfirmed") -> Transition:
    """Give up on the credit: refund, unless the bank may have paid, in which case ask it. `code`
    is what the customer is told when the bank confirms it never paid."""
    if not unknown:
        # Every answer said "not applied": the refund is safe.
        return Transition(S.COMPENSATING, "failed", machine.COMPENSATE, error=error,
                          detail={"reason": f"bank failed {held.attempt} times"},
                          values={"failure_code": "bank_unavailable"})
    try:
        record = wf.bank.void(key=key, reference=str(held.exchange_id))
    except BankError as void_error:
        return Transition(S.NEEDS_ATTENTION, "parked",
                          error=f"bank outcome unknown after {held.attempt} attempts ({error}); "
                                f"could not ask the bank: {void_error}")
    if record.status == "applied":
        return _credited(held, record)
    return Transition(S.COMPENSATING, "failed", machine.COMPENSATE, error=error,
                      detail={"reason": "bank voided the unanswered credit", "void_id": record.id},
                      values={"failure_code": code})
