"""What the processes say about themselves: heartbeats, and the outcome of each periodic check."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JSONDocument, JSONValue, UTCDateTime


class ProcessHeartbeat(Base):
    """One row per worker, relay or reconciler process, refreshed while it lives."""

    __tablename__ = "process_heartbeats"
    __table_args__ = (Index("ix_process_heartbeats_role_beat", "role", "beat_at"),)

    #: role:host:pid
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    host: Mapped[str] = mapped_column(String(120))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Set by a clean shutdown; a process that died has none and its beats simply stop.
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What it holds now (steps in hand, the batch being published), as the process reports it.
    holding: Mapped[JSONValue | None] = mapped_column(JSONDocument)


class OpsCheck(Base):
    """The last run of a named periodic check (e.g. the reconciler's bank comparison)."""

    __tablename__ = "ops_checks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When it last ran to the end; None: it never could.
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why the last attempt could not run (None when it did).
    last_error: Mapped[str | None] = mapped_column(Text)
