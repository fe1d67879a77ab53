"""Accounts and their per-currency balances."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Money, UTCDateTime, utcnow


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    #: The house/settlement account: the bank's side of every posting, one per system.
    HOUSE = "house"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("kind IN ('customer', 'house')", name="kind"),
        CheckConstraint("status IN ('active', 'frozen', 'closed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(200))
    #: The customer who may use this account; the house account has none.
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default=AccountKind.CUSTOMER)
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Balance(Base):
    """A customer's money in one currency: `available` to spend, `held` for exchanges in flight.

    The house account has no balance rows: its position is the ledger's sum, so no
    single hot row serialises every posting.
    """

    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint("available >= 0", name="available_not_negative"),
        CheckConstraint("held >= 0", name="held_not_negative"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    available: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    held: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
