"""What the reconciler found when it compared our ledger with the bank's record, and each finding's life:
open -> acknowledged (an operator's note) -> resolved (a later pass no longer finds it, or an operator)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, Money, UTCDateTime, utcnow


class ReconciliationFinding(Base):
    __tablename__ = "reconciliation_findings"
    __table_args__ = (
        UniqueConstraint("subject", "kind"),
        Index("ix_reconciliation_findings_open", "resolved_at", "found_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: The exchange it is about; none for a bank transfer that matches no exchange of ours.
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("exchanges.id"))
    #: What it is about: the exchange id, or the bank's transfer id (one finding per subject and kind).
    subject: Mapped[str] = mapped_column(String(120))
    #: bank_paid_not_credited / credited_not_paid / amount_differs / paid_twice / refunded_but_paid /
    #: unknown_exchange
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(120))
    note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: "reconciler" when a later pass no longer found it; otherwise the operator's name.
    resolved_by: Mapped[str | None] = mapped_column(String(120))


class BankStatementLine(Base):
    """Our copy of one transfer in the bank's record, kept current from the bank's change feed,
    so that a reconciler pass reads from the bank only what changed since the last one."""

    __tablename__ = "bank_statement_lines"
    __table_args__ = (
        Index("ix_bank_statement_lines_reference", "reference"),
        Index("ix_bank_statement_lines_change_seq", "change_seq"),
    )

    #: The bank's transfer id.
    transfer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The exchange id the transfer was made for (any text the bank was given).
    reference: Mapped[str] = mapped_column(String(120))
    #: applied / voided / reversed, as the bank last said.
    status: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    #: Its place in the bank's change feed: the highest one here is where the next read starts.
    change_seq: Mapped[int] = mapped_column(BigInteger)
