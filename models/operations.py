"""What the processes say about themselves: heartbeats, and the outcome of each periodic check."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, JSONDocument, JSONValue, UTCDateTime


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
    #: How far its last full run reached, for a check that each run continues from there (the
    #: bank comparison: exchanges settled before this instant have been judged).
    covered_through: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OperatorAction(Base):
    """The audit trail: every operator action, who took it, when, on what, and what came of it."""

    __tablename__ = "operator_actions"
    __table_args__ = (
        Index("ix_operator_actions_at", "at"),
        Index("ix_operator_actions_exchange_id", "exchange_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    operator: Mapped[str] = mapped_column(String(120))
    #: retry / cancel / compensate / acknowledge_finding / resolve_finding / replay_dead_letter / ...
    action: Mapped[str] = mapped_column(String(40))
    #: What it was taken on: an exchange, a finding or a dead-lettered message.
    subject: Mapped[str] = mapped_column(String(200))
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    result: Mapped[str] = mapped_column(Text)
    detail: Mapped[JSONValue | None] = mapped_column(JSONDocument)
