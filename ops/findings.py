"""The life of a reconciliation finding: open -> acknowledged (an operator's note) -> resolved.

A pass stores what it found (a finding found again stays one row) and resolves the open
findings it judged and no longer finds; an operator may acknowledge or resolve one by
hand. Every change is written on the exchange's timeline, when the finding has one.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from domain.reconciliation import Finding
from errors import ActionRefused, NotFound
from models import exchanges
from models import reconciliation_findings as rf
from models.base import utcnow
from ops import audit
from services import timeline

#: Who resolves a finding that a later pass no longer finds.
RECONCILER = "reconciler"


class UnknownFinding(NotFound):
    code = "unknown_finding"


@dataclass
class FindingsChange:
    opened: list[Finding] = field(default_factory=list)
    resolved: list[tuple[uuid.UUID | None, str, str]] = field(default_factory=list)  # (exchange, kind, subject)


def record_pass(engine: Engine, found: list[Finding], *, judged: Collection[str], now: datetime,
                judged_strangers: Collection[str] | None = None) -> FindingsChange:
    """Store what a pass `found`; resolve the open findings it no longer finds about the exchanges it
    `judged` (their ids), and about bank transfers for no exchange: those in `judged_strangers`
    (subjects), or every one when None (the pass saw every applied transfer)."""
    change = FindingsChange()
    with engine.begin() as conn:
        open_rows = {(r.subject, r.kind): r for r in conn.execute(
            select(rf.c.id, rf.c.subject, rf.c.kind, rf.c.exchange_id).where(rf.c.resolved_at.is_(None)))}
        for finding in found:
            if (finding.subject, finding.kind) in open_rows:
                conn.execute(update(rf).where(rf.c.id == open_rows[finding.subject, finding.kind].id)
                             .values(detail=finding.detail))
                continue
            _open(conn, finding, now)
            change.opened.append(finding)
        still = {(f.subject, f.kind) for f in found}
        for key, row in open_rows.items():
            stranger = row.exchange_id is None
            if key not in still and (row.subject in judged if not stranger else
                                     judged_strangers is None or row.subject in judged_strangers):
                _resolve(conn, row, RECONCILER, "a later pass no longer finds it", now)
                change.resolved.append((row.exchange_id, row.kind, row.subject))
    return change


def _open(conn: Connection, finding: Finding, now: datetime) -> None:
    reopened = conn.execute(
        update(rf).where(rf.c.subject == finding.subject, rf.c.kind == finding.kind)
        .values(detail=finding.detail, found_at=now, resolved_at=None, resolved_by=None, acknowledged_at=None,
                acknowledged_by=None, note=None)
    ).rowcount
    if not reopened:
        conn.execute(insert(rf).values(exchange_id=finding.exchange_id, subject=finding.subject, kind=finding.kind,
                                       detail=finding.detail, found_at=now))
    _note(conn, finding.exchange_id, "finding_opened", RECONCILER, now, kind=finding.kind, detail=finding.detail)


def _resolve(conn: Connection, row: Any, who: str, note: str, now: datetime) -> None:
    conn.execute(update(rf).where(rf.c.id == row.id).values(resolved_at=now, resolved_by=who))
    _note(conn, row.exchange_id, "finding_resolved", who, now, kind=row.kind, note=note)


def _note(conn: Connection, exchange_id: uuid.UUID | None, outcome: str, who: str, now: datetime,
          **detail: Any) -> None:
    if exchange_id is None:
        return  # a bank transfer for no exchange of ours has no timeline; the findings list shows it
    state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == exchange_id)).scalar_one()
    worker = who if who == RECONCILER else f"operator:{who}"
    timeline.record(conn, exchange_id, step="reconciler", outcome=outcome, state=state, worker=worker,
                    detail={"by": who, **detail}, now=now)


def _open_finding(conn: Connection, finding_id: int) -> Any:
    row = conn.execute(select(rf).where(rf.c.id == finding_id)).first()
    if row is None:
        raise UnknownFinding("No such finding.")
    if row.resolved_at is not None:
        raise ActionRefused(f"This finding was resolved by {row.resolved_by}; nothing to do.")
    return row


def acknowledge(engine: Engine, finding_id: int, operator: str, note: str) -> str:
    """An operator has seen it and says what is being done; it stays open until resolved."""
    if not note.strip():
        raise ActionRefused("Say what is being done about it: a note is required.")
    now = utcnow()
    with engine.begin() as conn:
        row = _open_finding(conn, finding_id)
        conn.execute(update(rf).where(rf.c.id == finding_id)
                     .values(acknowledged_at=now, acknowledged_by=operator, note=note.strip()))
        _note(conn, row.exchange_id, "finding_acknowledged", operator, now, kind=row.kind, note=note.strip())
        audit.record(conn, operator=operator, action="acknowledge_finding", subject=f"finding {finding_id}",
                     exchange_id=row.exchange_id, result=f"{row.kind} acknowledged", now=now, note=note.strip())
    return "acknowledged"


def resolve(engine: Engine, finding_id: int, operator: str, note: str) -> str:
    """An operator settled it by hand (the next pass opens it again if the mismatch is still there)."""
    if not note.strip():
        raise ActionRefused("Say how it was settled: a note is required.")
    now = utcnow()
    with engine.begin() as conn:
        row = _open_finding(conn, finding_id)
        _resolve(conn, row, operator, note.strip(), now)
        audit.record(conn, operator=operator, action="resolve_finding", subject=f"finding {finding_id}",
                     exchange_id=row.exchange_id, result=f"{row.kind} resolved", now=now, note=note.strip())
    return "resolved"


def open_findings(conn: Connection, limit: int) -> list[Any]:
    return conn.execute(
        select(rf.c.id, rf.c.exchange_id, rf.c.subject, rf.c.kind, rf.c.detail, rf.c.found_at, rf.c.acknowledged_at,
               rf.c.acknowledged_by, rf.c.note)
        .where(rf.c.resolved_at.is_(None)).order_by(rf.c.found_at.desc()).limit(limit)
    ).all()
