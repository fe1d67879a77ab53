"""Accepting an exchange: hold the money, record it, and queue its first step, in ONE transaction."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from domain.states import ExchangeState
from errors import (
    AccountInactive,
    IdempotencyKeyReused,
    InsufficientFunds,
    QuoteUsed,
    UnknownAccount,
    UnknownExchange,
)
from infra.database import is_postgres, single_read
from models import AccountKind, AccountStatus, accounts, exchanges
from models.base import utcnow
from outbox.direct import DirectSender
from outbox.failpoints import failpoint
from outbox.store import OutboxRow
from services import quotes, timeline
from services.accept_writes import HOLD, KeyTaken, accept_at_once, record_accepted
from services.idempotency_keys import find_by_key
from services.rows import one_or_not_found

log = logging.getLogger("services.exchanges")


@dataclass(frozen=True)
class ExchangeRequest:
    account_id: uuid.UUID
    from_currency: str
    to_currency: str
    amount: Decimal
    #: A firm quote (services/quotes.py) for exactly this pair and amount: its rate is honoured.
    quote_id: uuid.UUID | None = None

    def fingerprint(self) -> str:
        """Same request, same hash: "10.0" and "10.00" are the same amount."""
        canonical = f"{self.account_id}|{self.from_currency}|{self.to_currency}|{self.amount.normalize()}"
        if self.quote_id is not None:  # appended only then: earlier requests' hashes stay valid
            canonical += f"|quote:{self.quote_id}"
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    """The answer to an accepted request; a replay with the same key gets the same one."""

    exchange_id: uuid.UUID
    account_id: uuid.UUID
    from_currency: str
    to_currency: str
    amount: Decimal
    accepted_at: datetime
    replayed: bool = False
    #: The first step's outbox message, as committed (None on a replay).
    first_message: OutboxRow | None = field(default=None, compare=False, repr=False)


def create_exchange(
    engine: Engine,
    request: ExchangeRequest,
    *,
    queue: str,
    idempotency_key: str | None = None,
    trace_headers: dict[str, str] | None = None,
    owner: uuid.UUID | None = None,
    sender: DirectSender | None = None,
) -> Accepted:
    """Accept an exchange: idempotent per (account, key); all or nothing.

    Holds the amount on the source balance, inserts the exchange, its first outbox
    message and its first timeline event in one transaction. Raises UnknownAccount,
    AccountInactive, InsufficientFunds or IdempotencyKeyReused having written nothing.
    With `owner`, an account of another customer is an UnknownAccount (the checks ride
    in the same statements, so they cost no extra round trip). With `sender`, the first
    message goes to the broker straight after the commit (outbox/direct.py), the relay
    sending it only if that fails.
    """
    fingerprint = request.fingerprint() if idempotency_key else None
    delay = None if sender is None else sender.grace
    try:
        accepted = None
        if request.quote_id is None and is_postgres(engine):  # the happy path in one statement
            accepted = _accept_at_once(engine, request, queue, idempotency_key, fingerprint, trace_headers, owner,
                                       delay)
        if accepted is None:  # SQLite, a quote, or a refusal or replay to tell
            with engine.begin() as conn:
                accepted = _accept(conn, request, queue, idempotency_key, fingerprint, trace_headers, owner, delay)
    except (KeyTaken, IntegrityError, QuoteUsed):
        # The key was used before (the exchange insert found it taken, and rolled the hold back
        # with everything else), or two requests with one key raced and the unique constraint
        # (or the quote's single use) let one win: answer this one as a replay of the winner (or
        # as a reuse of its key). Looked up only then: a first request pays no lookup.
        if not idempotency_key:
            raise
        with engine.connect() as conn:
            earlier = find_by_key(conn, request.account_id, idempotency_key, owner)
        if earlier is None:
            raise
        return _replay(earlier, fingerprint)
    if sender is not None and accepted.first_message is not None:
        failpoint("accept.before_direct_send")  # the web dies between its commit and its send
        refusal = sender.send(accepted.first_message)
        if refusal is not None:
            _record_refused_send(engine, accepted, refusal)
    return accepted


def _record_refused_send(engine: Engine, accepted: Accepted, refusal: str) -> None:
    """On the exchange's timeline (operators'; customers see nothing: their money is safe either way)."""
    try:
        with engine.begin() as conn:
            timeline.record(conn, accepted.exchange_id, step="dispatch", outcome="error", state=ExchangeState.PENDING,
                            message_id=accepted.first_message.id if accepted.first_message else None,
                            error=f"the broker refused the first message ({refusal}); the relay sends it")
    except Exception:  # the database too: the web's log has it, and the relay still sends the message
        log.warning("could not record the refused send of %s", accepted.exchange_id, exc_info=True)


def _accept_at_once(engine: Engine, request: ExchangeRequest, queue: str, idempotency_key: str | None,
                    fingerprint: str | None, trace_headers: dict[str, str] | None, owner: uuid.UUID | None,
                    delay: timedelta | None) -> Accepted | None:
    """The hold and every write in one autocommit statement; None when the hold said no."""
    now = utcnow()
    exchange_id = uuid.uuid4()
    with single_read(engine) as conn:  # (a single statement is its own transaction)
        first = accept_at_once(conn, _hold_params(request, owner, now),
                               _exchange_row(exchange_id, request, idempotency_key, fingerprint, now, {}),
                               queue=queue, trace_headers=trace_headers, delay=delay, now=now,
                               detail=_accept_detail(request))
    if first is None:
        return None
    return Accepted(exchange_id=exchange_id, account_id=request.account_id, from_currency=request.from_currency,
                    to_currency=request.to_currency, amount=request.amount, accepted_at=now, first_message=first)


def _accept(
    conn: Connection,
    request: ExchangeRequest,
    queue: str,
    idempotency_key: str | None,
    fingerprint: str | None,
    trace_headers: dict[str, str] | None,
    owner: uuid.UUID | None,
    delay: timedelta | None,
) -> Accepted:
    now = utcnow()
    if not _hold(conn, request, owner, now):
        if idempotency_key:
            # A request with this key may have committed while this one waited for the
            # balance row lock and taken the money: it is our replay, not a refusal. (This
            # statement reads what committed since; READ COMMITTED takes a fresh snapshot.)
            earlier = find_by_key(conn, request.account_id, idempotency_key, owner)
            if earlier is not None:
                return _replay(earlier, fingerprint)
        raise _refusal(conn, request, owner)
    exchange_id = uuid.uuid4()
    # The quote's refusal rolls the hold back with everything else.
    priced = {} if request.quote_id is None else quotes.take(
        conn, request.quote_id, exchange_id=exchange_id, account_id=request.account_id,
        from_currency=request.from_currency, to_currency=request.to_currency, amount=request.amount, now=now)
    first = _record(conn, exchange_id, request, queue, idempotency_key, fingerprint, trace_headers, now, priced,
                    delay)
    return Accepted(
        exchange_id=exchange_id,
        account_id=request.account_id,
        from_currency=request.from_currency,
        to_currency=request.to_currency,
        amount=request.amount,
        accepted_at=now,
        first_message=first,
    )


def _hold(conn: Connection, request: ExchangeRequest, owner: uuid.UUID | None, now: datetime) -> bool:
    """Hold the amount; False when the funds, the account or its owner say no.

    One conditional UPDATE locks the balance row, checks the funds and moves the amount
    to held: the row lock lasts until commit, so concurrent requests queue on it and
    none can spend what another has just held.
    """
    held = conn.execute(HOLD[owner is not None], _hold_params(request, owner, now))
    return held.rowcount == 1


def _hold_params(request: ExchangeRequest, owner: uuid.UUID | None, now: datetime) -> dict[str, Any]:
    return {"h_account": request.account_id, "h_currency": request.from_currency, "h_amount": request.amount,
            "h_now": now, "h_owner": owner}


def _exchange_row(exchange_id: uuid.UUID, request: ExchangeRequest, idempotency_key: str | None,
                  fingerprint: str | None, now: datetime, priced: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": exchange_id, "account_id": request.account_id, "from_currency": request.from_currency,
        "to_currency": request.to_currency, "amount": request.amount, "state": ExchangeState.PENDING,
        "attempt": 0, "claim_token": 0, "step_epoch": 0, "outcome_unknown": False,
        "idempotency_key": idempotency_key, "request_fingerprint": fingerprint,
        "created_at": now, "updated_at": now, "progressed_at": now,
        **dict.fromkeys(("quote_id", "rate", "to_amount", "quote_expires_at")),  # one statement shape
        **priced,
    }


def _accept_detail(request: ExchangeRequest) -> dict[str, Any]:
    return {"held": str(request.amount), "currency": request.from_currency,
            **({"quote_id": str(request.quote_id)} if request.quote_id else {})}


def _record(conn: Connection, exchange_id: uuid.UUID, request: ExchangeRequest, queue: str,
            idempotency_key: str | None, fingerprint: str | None, trace_headers: dict[str, str] | None,
            now: datetime, priced: dict[str, Any], delay: timedelta | None) -> OutboxRow:
    """The exchange row, its first outbox message and its first timeline entry, in the caller's
    transaction; KeyTaken when the account already has an exchange under `idempotency_key`."""
    return record_accepted(conn, _exchange_row(exchange_id, request, idempotency_key, fingerprint, now, priced),
                           queue=queue, trace_headers=trace_headers, delay=delay, now=now,
                           detail=_accept_detail(request))


def _owned_by(owner: uuid.UUID | None) -> list[Any]:
    return [] if owner is None else [accounts.c.customer_id == owner]


def _refusal(conn: Connection, request: ExchangeRequest, owner: uuid.UUID | None) -> Exception:
    """Say why the hold failed; runs only on the unhappy path."""
    account = conn.execute(
        select(accounts.c.kind, accounts.c.status, accounts.c.customer_id).where(accounts.c.id == request.account_id)
    ).first()
    # Another customer's account is answered exactly like one that does not exist.
    if account is None or account.kind != AccountKind.CUSTOMER or (owner is not None and account.customer_id != owner):
        return UnknownAccount("No such account.", fields={"account": ["No such account."]})
    if account.status != AccountStatus.ACTIVE:
        reason = f"Account is {account.status}."
        return AccountInactive(reason, fields={"account": [reason]})
    # The caller's balance is not echoed here: GET /api/accounts/<id> shows it.
    return InsufficientFunds(
        f"Insufficient {request.from_currency} funds.",
        fields={"amount": [f"Exceeds the available {request.from_currency} balance."]},
    )


def _replay(row: Any, fingerprint: str | None) -> Accepted:
    if row.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request.",
            fields={"Idempotency-Key": ["Already used with a different request body."]},
        )
    return Accepted(
        exchange_id=row.id,
        account_id=row.account_id,
        from_currency=row.from_currency,
        to_currency=row.to_currency,
        amount=row.amount,
        accepted_at=row.created_at,
        replayed=True,
    )


def get_exchange(engine: Engine, exchange_id: uuid.UUID, owner: uuid.UUID | None = None) -> Any:
    """The exchange's row; with `owner`, only if that customer owns its account."""
    query = select(exchanges).where(exchanges.c.id == exchange_id)
    if owner is not None:
        query = query.join(accounts, accounts.c.id == exchanges.c.account_id).where(*_owned_by(owner))
    return one_or_not_found(engine, query, UnknownExchange("No such exchange."))
