"""Outbox messages: written in the business transaction, published by the relay."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JSONDocument, JSONValue, UTCDateTime, utcnow


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        # The relay's claim reads only unpublished rows: a partial index keeps that scan
        # proportional to the backlog, not to the table.
        Index(
            "ix_outbox_messages_unpublished",
            "available_at",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index(
            "ix_outbox_messages_published",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
            sqlite_where=text("published_at IS NOT NULL"),
        ),
    )

    #: Also the Dramatiq message id, so a republished message is recognisable downstream.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    payload: Mapped[JSONValue] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Sentry trace propagation headers (sentry-trace, baggage) of the writing request.
    trace_headers: Mapped[dict[str, str] | None] = mapped_column(JSONDocument)


class RelayLease(Base):
    """Which relay publishes the outbox now: one active relay, the others stand by.

    The holder renews its lease while it runs; a standby takes the row over once the lease has
    expired (the holder died, or froze), so publishing never waits on a process that is gone.
    """

    __tablename__ = "relay_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
