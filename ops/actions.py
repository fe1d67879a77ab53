"""The operator's recovery actions: each one transaction, or a refusal that says why.

Every action is allowed from the states domain/states.py lists for it; one that moves the
exchange seizes its claim (fencing out a worker that may be running a step) and advances it
through `check_transition`, like a step. Each writes an outbox message and a timeline entry
naming the operator.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from bank.client import BankClient, BankError
from domain import states as machine
from domain.states import ExchangeState
from errors import ActionRefused, NotFound, UnknownExchange
from models import exchanges
from models.base import utcnow
from ops import audit
from outbox.writer import enqueue
from services import claims, ledger, timeline
from services.webhooks import delivery as webhook_delivery
from services.webhooks import log as webhook_log
from services.workflow import credit_key

S = ExchangeState

__all__ = ["ActionRefused", "UnknownAction", "cancel", "force_compensation", "retry_step", "run_action"]


class UnknownAction(NotFound):
    code = "unknown_action"


def _current(conn: Connection, exchange_id: uuid.UUID) -> Any:
    row = conn.execute(
        select(exchanges.c.state, exchanges.c.account_id, exchanges.c.from_currency, exchanges.c.amount)
        .where(exchanges.c.id == exchange_id)
    ).first()
    if row is None:
        raise UnknownExchange("No such exchange.")
    return row


def _note(conn: Connection, exchange_id: uuid.UUID, operator: str, outcome: str, state: str, now: datetime,
          **detail: Any) -> None:
    """The action on the exchange's timeline and in the audit trail, in the action's transaction."""
    timeline.record(conn, exchange_id, step="operator", outcome=outcome, state=state, worker=f"operator:{operator}",
                    detail={"operator": operator, **detail}, now=now)
    audit.record(conn, operator=operator, action=outcome, subject=f"exchange {exchange_id}", exchange_id=exchange_id,
                 result=f"{outcome} ({state})", now=now, **detail)


def _send(conn: Connection, step: machine.Step, exchange_id: uuid.UUID, epoch: int, queue: str,
          now: datetime) -> uuid.UUID:
    return enqueue(conn, actor=step.actor, payload=machine.step_payload(exchange_id, epoch), queue=queue, now=now)


def _seize(conn: Connection, exchange_id: uuid.UUID, action: machine.OperatorAction, operator: str,
           now: datetime) -> claims.Claim:
    assert action.allowed_from is not None and action.target is not None
    held = claims.seize(conn, exchange_id, allowed=action.allowed_from, step="operator", now=now)
    if held is None:
        raise ActionRefused("The exchange changed meanwhile; look again.")
    return held


def retry_step(engine: Engine, exchange_id: uuid.UUID, operator: str, *, queue: str) -> str:
    """Send the current step's message again, with a fresh attempt budget of its own.

    The step epoch goes up: a retry of the step still pending at the broker (its backoff) is
    acknowledged without effect when it comes, so it does not share the fresh budget.
    """
    now = utcnow()
    with engine.begin() as conn:
        state = S(_current(conn, exchange_id).state)
        step = machine.STEP_FOR_STATE.get(state)
        if step is None:
            raise ActionRefused(f"A {state} exchange has no step to retry.")
        epoch = conn.execute(
            update(exchanges).where(exchanges.c.id == exchange_id, exchanges.c.state == state)
            .values(attempt=0, updated_at=now, step_epoch=exchanges.c.step_epoch + 1)
            .returning(exchanges.c.step_epoch)
        ).scalar_one_or_none()
        if epoch is None:
            raise ActionRefused("The exchange changed meanwhile; look again.")
        message_id = _send(conn, step, exchange_id, epoch, queue, now)
        _note(conn, exchange_id, operator, "retry_requested", state, now, actor=step.actor, message_id=str(message_id))
    return f"{step.actor} sent again"


def cancel(engine: Engine, exchange_id: uuid.UUID, operator: str, *, queue: str) -> str:
    """Cancel an exchange before its debit: the hold is released, it ends failed."""
    action = machine.CANCEL_ACTION
    now = utcnow()
    with engine.begin() as conn:
        current = _current(conn, exchange_id)
        if current.state not in (action.allowed_from or ()):
            raise ActionRefused(f"Only pending or quoted exchanges can be cancelled; this one is {current.state}.")
        held = _seize(conn, exchange_id, action, operator, now)
        claims.advance(conn, held, S.FAILED, now=now, last_error=f"cancelled by operator {operator}",
                       failure_code="cancelled_by_support")
        ledger.release_hold(conn, current.account_id, current.from_currency, current.amount, now)
        _send(conn, machine.RECEIPT, exchange_id, held.epoch, queue, now)
        _note(conn, exchange_id, operator, "cancelled", S.FAILED, now, released=str(current.amount))
    return "cancelled; the hold was released"


def force_compensation(engine: Engine, bank: BankClient, exchange_id: uuid.UUID, operator: str, *,
                       queue: str) -> str:
    """Refund a debited exchange whose credit will not happen, after making sure the bank never pays it."""
    action = machine.COMPENSATE_ACTION
    with engine.connect() as conn:
        state = _current(conn, exchange_id).state
    if state not in (action.allowed_from or ()):
        raise ActionRefused(f"Only debited or parked exchanges can be compensated; this one is {state}.")
    try:
        # After this the bank refuses the credit's key, so no in-flight call can still pay.
        record = bank.void(key=credit_key(exchange_id), reference=str(exchange_id))
    except BankError as error:
        raise ActionRefused(f"The bank cannot confirm the credit was never paid ({error}); try again later.") from None
    if record.status == "applied":
        raise ActionRefused(f"The bank has paid this exchange (transfer {record.id}): retry the step to record "
                            "the credit instead.")
    now = utcnow()
    with engine.begin() as conn:
        held = _seize(conn, exchange_id, action, operator, now)
        claims.advance(conn, held, S.COMPENSATING, now=now, last_error=f"compensation forced by operator {operator}",
                       failure_code="reversed_by_support")
        _send(conn, machine.COMPENSATE, exchange_id, held.epoch, queue, now)
        _note(conn, exchange_id, operator, "compensation_forced", S.COMPENSATING, now, void_id=record.id)
    return "compensation started; the bank voided the credit"


def add_note(engine: Engine, exchange_id: uuid.UUID, operator: str, note: str) -> str:
    """An operator's note on the exchange: on its timeline and in the audit trail; nothing else changes."""
    if not note.strip():
        raise ActionRefused("The note is empty.")
    now = utcnow()
    with engine.begin() as conn:
        state = _current(conn, exchange_id).state
        _note(conn, exchange_id, operator, "note", state, now, note=note.strip()[:2000])
    return "note added"


def replay_webhook(engine: Engine, delivery_id: uuid.UUID, operator: str, *, queue: str) -> str:
    """Send a webhook delivery's event again now; on its exchange's timeline and in the audit trail."""
    found = webhook_log.owner_of(engine, delivery_id, None)
    now = utcnow()
    with engine.begin() as conn:
        webhook_delivery.replay_in(conn, delivery_id, queue=queue, now=now)
        _note(conn, found.exchange_id, operator, "webhook_replayed", _current(conn, found.exchange_id).state, now,
              delivery=str(delivery_id), event=found.type)
    return f"{found.type} will be sent again to {found.url}"


def run_action(engine: Engine, bank: BankClient, exchange_id: uuid.UUID, action: str, operator: str, *,
               queue: str) -> str:
    """The named action of domain/states.OPERATOR_ACTIONS, or UnknownAction."""
    if action == machine.RETRY_ACTION.name:
        return retry_step(engine, exchange_id, operator, queue=queue)
    if action == machine.CANCEL_ACTION.name:
        return cancel(engine, exchange_id, operator, queue=queue)
    if action == machine.COMPENSATE_ACTION.name:
        return force_compensation(engine, bank, exchange_id, operator, queue=queue)
    raise UnknownAction(f"No action {action!r}; use one of {', '.join(machine.OPERATOR_ACTIONS)}.")
