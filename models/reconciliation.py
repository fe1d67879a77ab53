"""What the reconciler found when it compared our ledger with the bank's record."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, UTCDateTime, utcnow


class ReconciliationFinding(Base):
    __tablename__ = "reconciliation_findings"
    __table_args__ = (
        UniqueConstraint("exchange_id", "kind"),
        Index("ix_reconciliation_findings_open", "resolved_at", "found_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("exchanges.id"))
    #: bank_paid_not_credited / credited_not_paid / amount_differs / paid_twice / refunded_but_paid
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
