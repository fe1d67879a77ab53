"""The reconciler: the last safety net.

- Exchanges with no progress past a threshold are sent their step's message again,
  through the outbox (the step claim makes a spare message harmless).
- Parked exchanges are sent to `resolve_exchange`, which asks the bank for its record.
- Our ledger is compared with the bank's record per exchange; every mismatch is stored
  (the dashboard lists them) and returned (the command prints them).
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bank.client import BankClient, BankError
from domain.reconciliation import BankPayment, ExchangeFacts, Finding, compare
from domain.states import OPEN_STATES, STEP_FOR_STATE, ExchangeState
from models import exchanges, ledger_entries, reconciliation_findings
from models.base import utcnow
from outbox.writer import enqueue
from services import timeline
from settings import Settings

__all__ = ["Finding", "ReconcileReport", "compare_with_bank", "credit_postings", "reconcile_once",
           "requeue_stuck", "run_daemon"]

log = logging.getLogger("reconciler")

#: Exchanges re-enqueued per pass at most. An exchange merely waiting behind a long queue
#: looks stuck too; a small cap keeps the spare messages a backlog draws (each one absorbed
#: by the step claim) well below the system's throughput, so a backlog cannot feed itself.
REQUEUE_BATCH = 50


@dataclass
class ReconcileReport:
    requeued: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"re-enqueued {exchange_id} ({state}) -> {actor}" for exchange_id, state, actor in self.requeued]
        out += [f"MISMATCH {f.kind} {f.exchange_id}: {f.detail}" for f in self.findings]
        return out or ["nothing stuck, ledger and bank agree"]


def requeue_stuck(engine: Engine, *, stuck_after: timedelta, queue: str, now: datetime | None = None,
                  limit: int = REQUEUE_BATCH) -> list[tuple[uuid.UUID, str, str]]:
    now = now or utcnow()
    with engine.connect() as conn:
        candidates = conn.execute(
            select(exchanges.c.id, exchanges.c.state, exchanges.c.updated_at)
            .where(exchanges.c.state.in_(OPEN_STATES), exchanges.c.updated_at < now - stuck_after,
                   (exchanges.c.claimed_until.is_(None)) | (exchanges.c.claimed_until < now))
            .order_by(exchanges.c.updated_at).limit(limit)
        ).all()
    requeued = []
    for row in candidates:
        actor = STEP_FOR_STATE[ExchangeState(row.state)].actor
        with engine.begin() as conn:
            # Compare-and-set on updated_at: two reconcilers never both send, and the
            # exchange is not sent again before another `stuck_after` has passed.
            moved = conn.execute(
                update(exchanges)
                .where(exchanges.c.id == row.id, exchanges.c.state == row.state,
                       exchanges.c.updated_at == row.updated_at)
                .values(updated_at=now)
            )
            if moved.rowcount != 1:
                continue
            message_id = enqueue(conn, actor=actor, payload={"exchange_id": str(row.id)}, queue=queue, now=now)
            timeline.record(conn, row.id, step="reconciler", outcome="requeued", state=row.state,
                            worker="reconciler", now=now,
                            detail={"actor": actor, "message_id": str(message_id),
                                    "idle_seconds": int((now - row.updated_at).total_seconds())})
        requeued.append((row.id, row.state, actor))
    return requeued


def compare_with_bank(engine: Engine, bank: BankClient, *, settle_after: timedelta,
                      now: datetime | None = None) -> list[Finding]:
    """Per settled exchange: the credit in our ledger against the transfers the bank applied."""
    now = now or utcnow()
    paid = [BankPayment(t.id, t.reference, t.amount, t.currency) for t in bank.all_applied()]
    with engine.connect() as conn:
        credits = credit_postings(conn)
        # Exchanges still moving may be paid at the bank and not yet here: judge settled ones only.
        settled = conn.execute(
            select(exchanges.c.id, exchanges.c.state, exchanges.c.to_amount, exchanges.c.to_currency)
            .where(exchanges.c.updated_at < now - settle_after)
        ).all()
    findings = compare([ExchangeFacts(r.id, r.state, r.to_amount, r.to_currency, credits.get(r.id, 0))
                        for r in settled], paid)
    _store(engine, findings, now)
    return findings


def credit_postings(conn: Connection) -> dict[uuid.UUID, int]:
    """How many credit postings each exchange has in our ledger."""
    return dict(conn.execute(
        select(ledger_entries.c.exchange_id, func.count(func.distinct(ledger_entries.c.posting_id)))
        .where(ledger_entries.c.kind == "credit").group_by(ledger_entries.c.exchange_id)
    ).tuples().all())


def _store(engine: Engine, findings: list[Finding], now: datetime) -> None:
    if not findings:
        return
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        for f in findings:
            statement = dialect.insert(reconciliation_findings).values(
                exchange_id=f.exchange_id, kind=f.kind, detail=f.detail, found_at=now)
            conn.execute(statement.on_conflict_do_update(
                index_elements=["exchange_id", "kind"], set_={"detail": f.detail, "resolved_at": None}))


def reconcile_once(engine: Engine, bank: BankClient | None, *, stuck_after: timedelta, queue: str) -> ReconcileReport:
    report = ReconcileReport(requeued=requeue_stuck(engine, stuck_after=stuck_after, queue=queue))
    if bank is not None:
        try:
            report.findings = compare_with_bank(engine, bank, settle_after=stuck_after)
        except BankError as error:
            log.warning("cannot compare with the bank this time: %s", error)
    for line in report.lines():
        log.info("%s", line)
    return report


def run_daemon(settings: Settings, engine: Engine, bank: BankClient) -> None:
    """A pass every RECONCILE_INTERVAL_SECONDS until SIGTERM or SIGINT."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("reconciler started: stuck after %.0fs, every %.0fs",
             settings.stuck_after_seconds, settings.reconcile_interval_seconds)
    while not stopping.is_set():
        try:
            reconcile_once(engine, bank, stuck_after=timedelta(seconds=settings.stuck_after_seconds),
                           queue=settings.queue_name)
        except Exception:  # a failed pass is retried at the next interval
            log.exception("reconciliation pass failed")
        stopping.wait(settings.reconcile_interval_seconds)
    log.info("reconciler stopped")
