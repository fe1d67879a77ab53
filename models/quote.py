"""Firm quotes: a rate a customer may accept until it expires, once."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Money, Rate, UTCDateTime, utcnow


class Quote(Base):
    """What `POST /api/quotes` promised. An exchange that names it before `expires_at` gets exactly
    this rate and target amount, however slow its queue; `used_at` makes it single-use."""

    __tablename__ = "quotes"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("from_currency <> to_currency", name="currencies_differ"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id"))
    from_currency: Mapped[str] = mapped_column(String(3))
    to_currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money)
    rate: Mapped[Decimal] = mapped_column(Rate)
    to_amount: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Set, with `exchange_id`, by the exchange that accepted it (a compare-and-set: once).
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
