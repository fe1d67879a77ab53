"""Exchanges and their timeline events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.states import ExchangeState
from models.base import Base, BigId, JSONDocument, JSONValue, Money, Rate, UTCDateTime, utcnow

_STATES = ", ".join(f"'{s.value}'" for s in ExchangeState)


class Exchange(Base):
    __tablename__ = "exchanges"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        CheckConstraint(f"state IN ({_STATES})", name="state"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("from_currency <> to_currency", name="currencies_differ"),
        Index("ix_exchanges_account_created", "account_id", "created_at"),
        Index("ix_exchanges_state_updated", "state", "updated_at"),
        # The dashboard pages through all exchanges by last change.
        Index("ix_exchanges_updated", "updated_at"),
        # Stuck: open exchanges whose steps have not moved them for a while.
        Index("ix_exchanges_state_progressed", "state", "progressed_at"),
        # Operators search by idempotency key alone; the unique constraint leads with the account.
        Index("ix_exchanges_idempotency_key", "idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    from_currency: Mapped[str] = mapped_column(String(3))
    to_currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money)
    rate: Mapped[Decimal | None] = mapped_column(Rate)
    to_amount: Mapped[Decimal | None] = mapped_column(Money)
    quote_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The customer's firm quote it was accepted on: its rate is honoured, never re-priced.
    quote_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("quotes.id"))
    state: Mapped[str] = mapped_column(String(20), default=ExchangeState.PENDING)
    # The step claim: who works on the exchange now, until when, and a fencing token
    # that every write of the step checks, so a worker whose lease ran out cannot write.
    step: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[int] = mapped_column(Integer, default=0)
    #: Raised by an operator's Retry: step messages written before it are superseded (see step_payload).
    step_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Set by a claim that took over an expired one: whose claim it was.
    rescued_from: Mapped[str | None] = mapped_column(String(120))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Why it was refunded or failed, as a code from domain.customer_view.FAILURE_REASONS: what the
    #: customer is told (last_error is for operators: it names hosts and workers).
    failure_code: Mapped[str | None] = mapped_column(String(40))
    #: A call of the current step may have reached the bank without an answer (timeout):
    #: the step must not be given up on without asking the bank first.
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    receipt_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    #: Hash of the validated request, to tell a replay from a reuse of the key.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When a step last produced an outcome (advanced, retried, parked): the stuck clock.
    #: Re-sends, operator notes and housekeeping never move it.
    progressed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the reconciler last re-sent the current step's message (at most once per threshold).
    requeued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the broker will deliver the current step's next retry (None when none is pending).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExchangeEvent(Base):
    """One line of an exchange's timeline, written in the transaction that made it true."""

    __tablename__ = "exchange_events"
    __table_args__ = (Index("ix_exchange_events_exchange_id", "exchange_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("exchanges.id"))
    step: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    #: started / succeeded / failed / retrying / compensated / ...
    outcome: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(120))
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[JSONValue | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExchangeStateCount(Base):
    """How many exchanges were in each state at the last fold of the deltas (ops/counts.py)."""

    __tablename__ = "exchange_state_counts"

    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ExchangeStateDelta(Base):
    """+1 / -1 per state for each insert and state change of an exchange, appended by a
    PostgreSQL trigger in the same transaction (migration 0008), folded into the counts later.
    Append-only, so concurrent transitions never wait on one another's counter row."""

    __tablename__ = "exchange_state_deltas"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(Integer)
