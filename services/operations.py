"""What operators see and do: the dashboard's queries and the recovery actions.

Each action is one transaction that writes an outbox message and a timeline event naming
the operator, or a refusal that says why the exchange's state does not allow it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_, update

from bank.client import BankClient, BankError
from domain.states import TERMINAL_STATES, ExchangeState
from errors import ExchangeServiceError, UnknownExchange
from jobs import messages
from models import exchanges, reconciliation_findings
from models.base import utcnow
from outbox.writer import enqueue
from services import ledger, timeline
from services.workflow import credit_key

S = ExchangeState

#: The actor that moves an exchange on from each state that is not final.
NEXT_ACTOR: dict[ExchangeState, str] = {
    S.PENDING: messages.QUOTE_EXCHANGE,
    S.QUOTED: messages.DEBIT_EXCHANGE,
    S.DEBITED: messages.CREDIT_EXCHANGE,
    S.CREDITED: messages.COMPLETE_EXCHANGE,
    S.COMPENSATING: messages.COMPENSATE_EXCHANGE,
    S.NEEDS_ATTENTION: messages.RESOLVE_EXCHANGE,
}
OPEN_STATES = tuple(s.value for s in NEXT_ACTOR)
PAGE_SIZE = 50


class ActionRefused(ExchangeServiceError):
    status = 409
    code = "action_refused"


@dataclass(frozen=True)
class ExchangeSummary:
    id: uuid.UUID
    account_id: uuid.UUID
    state: str
    from_currency: str
    to_currency: str
    amount: Decimal
    step: str | None
    attempt: int
    last_error: str | None
    claimed_by: str | None
    created_at: datetime
    updated_at: datetime


_SUMMARY = (exchanges.c.id, exchanges.c.account_id, exchanges.c.state, exchanges.c.from_currency,
            exchanges.c.to_currency, exchanges.c.amount, exchanges.c.step, exchanges.c.attempt,
            exchanges.c.last_error, exchanges.c.claimed_by, exchanges.c.created_at, exchanges.c.updated_at)


def _summaries(conn: Connection, query: Any) -> list[ExchangeSummary]:
    return [ExchangeSummary(*row) for row in conn.execute(query)]


def counts_by_state(conn: Connection) -> dict[str, int]:
    # Answered from the (state, updated_at) index, not the table.
    rows = conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()
    counts = {s.value: 0 for s in ExchangeState}
    counts.update({state: n for state, n in rows})
    return counts


def stuck(conn: Connection, *, older_than: timedelta, now: datetime, limit: int = PAGE_SIZE) -> list[ExchangeSummary]:
    """Open exchanges with no progress for `older_than` (parked ones are listed apart)."""
    return _summaries(conn, select(*_SUMMARY).where(
        exchanges.c.state.in_([s for s in OPEN_STATES if s != S.NEEDS_ATTENTION]),
        exchanges.c.updated_at < now - older_than,
    ).order_by(exchanges.c.updated_at).limit(limit))


def page(conn: Connection, *, states: list[str] | None = None, before: tuple[datetime, uuid.UUID] | None = None,
         limit: int = PAGE_SIZE) -> list[ExchangeSummary]:
    """Exchanges by last change, newest first; `before` is the (updated_at, id) of the last row seen."""
    query = select(*_SUMMARY)
    if states:
        query = query.where(exchanges.c.state.in_(states))
    if before is not None:
        query = query.where(tuple_(exchanges.c.updated_at, exchanges.c.id) < tuple_(*before))
    return _summaries(conn, query.order_by(exchanges.c.updated_at.desc(), exchanges.c.id.desc()).limit(limit))


def open_findings(conn: Connection, limit: int = PAGE_SIZE) -> list[Any]:
    f = reconciliation_findings
    return conn.execute(
        select(f.c.exchange_id, f.c.kind, f.c.detail, f.c.found_at).where(f.c.resolved_at.is_(None))
        .order_by(f.c.found_at.desc()).limit(limit)
    ).all()


# --- recovery actions ------------------------------------------------------------------


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
    timeline.record(conn, exchange_id, step="operator", outcome=outcome, state=state, worker=f"operator:{operator}",
                    detail={"operator": operator, **detail}, now=now)


def retry_step(engine: Engine, exchange_id: uuid.UUID, operator: str, *, queue: str) -> str:
    """Send the current step's message again, with a fresh attempt budget."""
    now = utcnow()
    with engine.begin() as conn:
        state = S(_current(conn, exchange_id).state)
        if state not in NEXT_ACTOR:
            raise ActionRefused(f"A {state} exchange has no step to retry.")
        moved = conn.execute(
            update(exchanges).where(exchanges.c.id == exchange_id, exchanges.c.state == state)
            .values(attempt=0, updated_at=now)
        )
        if moved.rowcount != 1:
            raise ActionRefused("The exchange changed meanwhile; look again.")
        actor = NEXT_ACTOR[state]
        message_id = enqueue(conn, actor=actor, payload={"exchange_id": str(exchange_id)}, queue=queue, now=now)
        _note(conn, exchange_id, operator, "retry_requested", state, now, actor=actor, message_id=str(message_id))
    return f"{actor} sent again"


def cancel(engine: Engine, exchange_id: uuid.UUID, operator: str, *, queue: str) -> str:
    """Cancel an exchange before its debit: the hold is released, it ends failed."""
    now = utcnow()
    with engine.begin() as conn:
        current = _current(conn, exchange_id)
        if current.state not in (S.PENDING, S.QUOTED):
            raise ActionRefused(f"Only pending or quoted exchanges can be cancelled; this one is {current.state}.")
        # Raising the claim token fences out a worker that may be running a step now.
        moved = conn.execute(
            update(exchanges).where(exchanges.c.id == exchange_id, exchanges.c.state == current.state)
            .values(state=S.FAILED, claim_token=exchanges.c.claim_token + 1, claimed_by=None, claimed_until=None,
                    last_error=f"cancelled by operator {operator}", updated_at=now)
        )
        if moved.rowcount != 1:
            raise ActionRefused("The exchange changed meanwhile; look again.")
        ledger.release_hold(conn, current.account_id, current.from_currency, current.amount, now)
        enqueue(conn, actor=messages.SEND_RECEIPT, payload={"exchange_id": str(exchange_id)}, queue=queue, now=now)
        _note(conn, exchange_id, operator, "cancelled", S.FAILED, now, released=str(current.amount))
    return "cancelled; the hold was released"


def force_compensation(engine: Engine, bank: BankClient, exchange_id: uuid.UUID, operator: str, *,
                       queue: str) -> str:
    """Refund a debited exchange whose credit will not happen, after making sure the bank never pays it."""
    with engine.connect() as conn:
        state = _current(conn, exchange_id).state
    if state not in (S.DEBITED, S.NEEDS_ATTENTION):
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
        moved = conn.execute(
            update(exchanges).where(exchanges.c.id == exchange_id,
                                    exchanges.c.state.in_([S.DEBITED, S.NEEDS_ATTENTION]))
            .values(state=S.COMPENSATING, claim_token=exchanges.c.claim_token + 1, claimed_by=None,
                    claimed_until=None, last_error=f"compensation forced by operator {operator}", updated_at=now)
        )
        if moved.rowcount != 1:
            raise ActionRefused("The exchange changed meanwhile; look again.")
        enqueue(conn, actor=messages.COMPENSATE_EXCHANGE, payload={"exchange_id": str(exchange_id)}, queue=queue,
                now=now)
        _note(conn, exchange_id, operator, "compensation_forced", S.COMPENSATING, now, void_id=record.id)
    return "compensation started; the bank voided the credit"


def is_open(state: str) -> bool:
    return state not in {s.value for s in TERMINAL_STATES}
