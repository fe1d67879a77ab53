"""The step claim: a compare-and-set with a lease and a fencing token.

`claim` takes the exchange for one step if it is in the expected state and nobody holds
an unexpired lease; it raises the claim counter (the fencing token) and returns it.
`advance` and `release` write only while that token is still current: a worker whose
lease ran out and whose step was taken over finds 0 rows and raises LostClaim, so its
transaction rolls back as a whole.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Update, bindparam, case, func, or_, select, update

from domain.states import ExchangeState, check_transition
from errors import WorkflowError
from models import exchanges as t


class LostClaim(WorkflowError):
    """The step's fencing token is no longer current: another worker took the step over."""


@dataclass(frozen=True)
class Claim:
    exchange_id: uuid.UUID
    step: str
    token: int
    attempt: int
    state: ExchangeState
    account_id: uuid.UUID
    from_currency: str
    to_currency: str
    amount: Decimal
    rate: Decimal | None
    to_amount: Decimal | None
    quote_expires_at: datetime | None
    outcome_unknown: bool
    #: The exchange's step epoch (see domain.states.step_payload).
    epoch: int
    #: The worker whose claim on this step expired without a result, if any: this claim
    #: is a rescue, and the step's rescue policy decides what happens.
    rescued_from: str | None = None
    #: The customer's firm quote: its rate stands, however late the steps run.
    quote_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Busy:
    """The exchange is in the expected state but another worker's lease has not expired."""

    claimed_by: str | None
    claimed_until: datetime


_RETURNING = (
    t.c.claim_token, t.c.attempt, t.c.account_id, t.c.from_currency, t.c.to_currency, t.c.amount, t.c.rate,
    t.c.to_amount, t.c.quote_expires_at, t.c.outcome_unknown, t.c.step_epoch, t.c.rescued_from, t.c.quote_id,
)


#: Built once: the claim runs on every step, and building the statement costs more than running it.
_CLAIM = (
    update(t)
    .where(t.c.id == bindparam("c_id"), t.c.state == bindparam("c_expected"),
           t.c.step_epoch <= bindparam("c_epoch"),
           or_(t.c.claimed_until.is_(None), t.c.claimed_until < bindparam("c_now")))
    .values(
        step=bindparam("c_step"),
        attempt=case((t.c.step == bindparam("c_step"), t.c.attempt + 1), else_=1),
        claimed_by=bindparam("c_worker"),
        claimed_until=bindparam("c_until"),
        claim_token=t.c.claim_token + 1,
        # SET reads the row as it was: a claim still set here expired without a result.
        rescued_from=case((t.c.claimed_until.is_not(None), func.coalesce(t.c.claimed_by, "?")), else_=None),
        updated_at=bindparam("c_now"),
        next_attempt_at=None,  # the retry it announced is this delivery
    )
    .returning(*_RETURNING)
)


def claim(
    conn: Connection,
    exchange_id: uuid.UUID,
    *,
    expected: ExchangeState,
    step: str,
    worker: str,
    lease: timedelta,
    now: datetime,
    epoch: int = 0,
) -> Claim | Busy | None:
    """Claim the step; None when the exchange is no longer in `expected` (a duplicate: ack it), or when
    the delivery's `epoch` was superseded by an operator's Retry (ack it too)."""
    row = conn.execute(_CLAIM, {"c_id": exchange_id, "c_expected": expected, "c_now": now, "c_step": step,
                                "c_worker": worker, "c_until": now + lease, "c_epoch": epoch}).first()
    if row is not None:
        return Claim(exchange_id, step, row[0], row[1], expected, *row[2:])
    current = conn.execute(
        select(t.c.state, t.c.claimed_by, t.c.claimed_until, t.c.step_epoch).where(t.c.id == exchange_id)
    ).first()
    if current is None or current.state != expected or current.step_epoch > epoch:
        return None
    return Busy(current.claimed_by, current.claimed_until)


@functools.cache
def _advance_statement(columns: tuple[str, ...]) -> Update:
    """The fenced move for steps that also set `columns`, built once per set of columns."""
    return (
        update(t)
        .where(t.c.id == bindparam("a_id"), t.c.claim_token == bindparam("a_token"))
        .values(state=bindparam("a_state"), claimed_by=None, claimed_until=None, outcome_unknown=False,
                updated_at=bindparam("a_now"), progressed_at=bindparam("a_now"), next_attempt_at=None,
                **{column: bindparam(f"a_{column}") for column in columns})
        .returning(t.c.step_epoch)
    )


def advance(conn: Connection, held: Claim, target: ExchangeState, *, now: datetime, **values: Any) -> int:
    """Move to `target` and drop the claim, only while `held` is still the current claim.

    Returns the step epoch as it is now, for the next step's message (an operator's Retry may have
    raised it while this step ran)."""
    check_transition(held.state, target)
    columns = tuple(sorted(values))
    params = {"a_id": held.exchange_id, "a_token": held.token, "a_state": target, "a_now": now,
              **{f"a_{column}": values[column] for column in columns}}
    epoch = conn.execute(_advance_statement(columns), params).scalar_one_or_none()
    if epoch is None:
        raise LostClaim(f"claim {held.token} on {held.exchange_id} was taken over")
    return epoch


@functools.cache
def _advance_and_claim_statement(columns: tuple[str, ...]) -> Update:
    """`advance` and the next step's `claim` of the same row in one statement, for a next step
    that runs in this transaction: each keeps its own token (the counter rises by one)."""
    return (
        update(t)
        .where(t.c.id == bindparam("a_id"), t.c.claim_token == bindparam("a_token"))
        .values(state=bindparam("a_state"), outcome_unknown=False, updated_at=bindparam("a_now"),
                progressed_at=bindparam("a_now"), next_attempt_at=None,
                step=bindparam("c_step"), attempt=case((t.c.step == bindparam("c_step"), t.c.attempt + 1), else_=1),
                claimed_by=bindparam("c_worker"), claimed_until=bindparam("c_until"),
                claim_token=t.c.claim_token + 1, rescued_from=None,
                **{column: bindparam(f"a_{column}") for column in columns})
        .returning(*_RETURNING)
    )


def advance_and_claim(conn: Connection, held: Claim, target: ExchangeState, *, step: str, worker: str,
                      lease: timedelta, now: datetime, **values: Any) -> Claim:
    """Move to `target` (as `advance`, fenced by `held`) and claim `step` in that state for
    `worker`, as `claim` would right after: one UPDATE instead of two."""
    check_transition(held.state, target)
    columns = tuple(sorted(values))
    params = {"a_id": held.exchange_id, "a_token": held.token, "a_state": target, "a_now": now, "c_step": step,
              "c_worker": worker, "c_until": now + lease, **{f"a_{column}": values[column] for column in columns}}
    row = conn.execute(_advance_and_claim_statement(columns), params).first()
    if row is None:
        raise LostClaim(f"claim {held.token} on {held.exchange_id} was taken over")
    return Claim(held.exchange_id, step, row[0], row[1], target, *row[2:])


def _release_statement(outcome_unknown: bool) -> Update:
    return (
        update(t)
        .where(t.c.id == bindparam("r_id"), t.c.claim_token == bindparam("r_token"))
        .values(claimed_by=None, claimed_until=None, last_error=bindparam("r_error"), updated_at=bindparam("r_now"),
                progressed_at=bindparam("r_now"), **({"outcome_unknown": True} if outcome_unknown else {}))
    )


_RELEASE = {unknown: _release_statement(unknown) for unknown in (False, True)}


def release(conn: Connection, held: Claim, *, error: str, outcome_unknown: bool, now: datetime) -> None:
    """Give the claim back without advancing (a retry will claim again), only while it is ours."""
    result = conn.execute(_RELEASE[outcome_unknown], {"r_id": held.exchange_id, "r_token": held.token,
                                                      "r_error": error[:4000], "r_now": now})
    if result.rowcount != 1:
        raise LostClaim(f"claim {held.token} on {held.exchange_id} was taken over")


def seize(conn: Connection, exchange_id: uuid.UUID, *, allowed: frozenset[ExchangeState], step: str,
          now: datetime) -> Claim | None:
    """An operator's claim: taken whatever lease a worker holds, so its token fences that worker out.

    None when the exchange is not in one of the `allowed` states (it moved meanwhile). The
    caller then moves it with `advance`, which checks the transition like any step's.
    """
    row = conn.execute(
        update(t)
        .where(t.c.id == exchange_id, t.c.state.in_([s.value for s in allowed]))
        .values(claim_token=t.c.claim_token + 1, claimed_by=None, claimed_until=None, updated_at=now)
        .returning(t.c.state, *_RETURNING)
    ).first()
    if row is None:
        return None
    return Claim(exchange_id, step, row[1], row[2], ExchangeState(row[0]), *row[3:])


def note_next_attempt(conn: Connection, exchange_id: uuid.UUID, *, step: str, at: datetime) -> None:
    """The broker will deliver `step` again at `at`: shown to operators beside the exchange.

    Only while the exchange is still on that step and nobody holds it (a retry already running,
    or a step already past, makes the note stale)."""
    conn.execute(update(t).where(t.c.id == exchange_id, t.c.step == step, t.c.claimed_by.is_(None))
                 .values(next_attempt_at=at))
