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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import FrameType

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bank.client import BankClient, BankError
from models import exchanges, ledger_entries, reconciliation_findings
from models.base import utcnow
from outbox.writer import enqueue
from services import timeline
from services.operations import NEXT_ACTOR, OPEN_STATES
from settings import Settings

log = logging.getLogger("reconciler")

#: Exchanges re-enqueued per pass at most. An exchange merely waiting behind a long queue
#: looks stuck too; a small cap keeps the spare messages a backlog draws (each one absorbed
#: by the step claim) well below the system's throughput, so a backlog cannot feed itself.
REQUEUE_BATCH = 50


@dataclass(frozen=True)
class Finding:
    exchange_id: uuid.UUID
    kind: str
    detail: str


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
        actor = NEXT_ACTOR[row.state]
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
    """Per exchange: the credit in our ledger against the transfers the bank applied."""
    now = now or utcnow()
    paid: dict[str, list[tuple[Decimal, str]]] = defaultdict(list)
    for transfer in bank.all_applied():
        paid[transfer.reference].append((transfer.amount, transfer.currency))
    with engine.connect() as conn:
        credits = Counter(
            {str(r[0]): r[1] for r in conn.execute(
                select(ledger_entries.c.exchange_id, func.count(func.distinct(ledger_entries.c.posting_id)))
                .where(ledger_entries.c.kind == "credit").group_by(ledger_entries.c.exchange_id))}
        )
        # Exchanges still moving may be paid at the bank and not yet here: judge settled ones only.
        settled = conn.execute(
            select(exchanges.c.id, exchanges.c.state, exchanges.c.to_amount, exchanges.c.to_currency)
            .where(exchanges.c.updated_at < now - settle_after)
        ).all()
    findings = []
    for row in settled:
        key = str(row.id)
        transfers, ours = paid.get(key, []), credits.get(key, 0)
        if len(transfers) > 1:
            findings.append(Finding(row.id, "paid_twice", f"the bank applied {len(transfers)} transfers"))
        if transfers and row.state == "refunded":
            findings.append(Finding(row.id, "refunded_but_paid", "refunded here, yet the bank paid the credit"))
        elif transfers and ours == 0 and row.state != "needs_attention":
            findings.append(Finding(row.id, "bank_paid_not_credited",
                                    f"the bank paid {transfers[0][0]} {transfers[0][1]}; no credit in our ledger"))
        if ours and not transfers:
            findings.append(Finding(row.id, "credited_not_paid", "credited in our ledger; the bank has no transfer"))
        if transfers and ours and (transfers[0][0], transfers[0][1]) != (row.to_amount, row.to_currency):
            findings.append(Finding(row.id, "amount_differs",
                                    f"bank paid {transfers[0][0]} {transfers[0][1]}, "
                                    f"we credited {row.to_amount} {row.to_currency}"))
    _store(engine, findings, now)
    return findings


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
