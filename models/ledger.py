"""The double-entry ledger: every posting's entries sum to zero per currency."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, Money, UTCDateTime, utcnow


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_entries_posting_id", "posting_id"),
        Index("ix_ledger_entries_exchange_id", "exchange_id"),
        Index("ix_ledger_entries_account_currency", "account_id", "currency"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: Entries written together as one balanced posting share this id.
    posting_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("exchanges.id"))
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    currency: Mapped[str] = mapped_column(String(3))
    #: Signed: positive credits the account, negative debits it.
    amount: Mapped[Decimal] = mapped_column(Money)
    #: funding / debit / credit / refund ...
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
