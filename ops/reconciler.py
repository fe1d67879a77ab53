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

from sqlalchemy import Connection, Engine, func, or_, select, update

from bank.client import BankClient, BankError
from domain.reconciliation import ExchangeFacts, Finding, compare
from domain.states import OPEN_STATES, STEP_FOR_STATE, ExchangeState, step_payload
from models import exchanges, ledger_entries
from models.base import utcnow
from ops import bank_statement, checks, counts
from ops.findings import FindingsChange, record_pass
from ops.processes import Heartbeat, ProcessRole
from outbox.writer import enqueue
from services import timeline
from settings import Settings

__all__ = ["Comparison", "Finding", "ReconcileReport", "compare_ledger", "compare_with_bank", "credit_postings",
           "reconcile_once", "requeue_stuck", "run_daemon"]

log = logging.getLogger("reconciler")

#: Exchanges re-enqueued per pass at most. An exchange merely waiting behind a long queue
#: looks stuck too; a small cap keeps the spare messages a backlog draws (each one absorbed
#: by the step claim) well below the system's throughput, so a backlog cannot feed itself.
REQUEUE_BATCH = 50
#: Bank references looked up per query when telling ours from strangers.
KNOWN_BATCH = 500
#: More bank changes than this in one pass (a first import, a long outage) and the pass judges
#: every settled exchange: cheaper than naming each touched one.
FULL_PASS_AFTER_CHANGES = 5_000


#: `reconcile once` exit statuses: all clear, a mismatch found, the comparison could not run.
EXIT_AGREE, EXIT_MISMATCH, EXIT_UNKNOWN = 0, 1, 3


@dataclass(frozen=True)
class Comparison:
    """One comparison of our ledger with the bank's record, and what it cost."""

    findings: list[Finding]
    change: FindingsChange
    #: Exchanges judged, and bank transfers read from the bank's change feed.
    judged: int
    bank_changes: int
    full: bool


@dataclass
class ReconcileReport:
    requeued: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: Open findings this pass no longer found: (exchange, kind, subject).
    resolved: list[tuple[uuid.UUID | None, str, str]] = field(default_factory=list)
    #: Why the ledger could not be compared with the bank; None when it was.
    bank_error: str | None = None
    #: What the comparison read: exchanges judged, bank changes imported (None when it did not run).
    judged: int | None = None
    bank_changes: int | None = None

    @property
    def compared(self) -> bool:
        return self.bank_error is None

    @property
    def exit_code(self) -> int:
        if not self.compared:
            return EXIT_UNKNOWN
        return EXIT_MISMATCH if self.findings else EXIT_AGREE

    def lines(self) -> list[str]:
        out = [f"re-enqueued {exchange_id} ({state}) -> {actor}" for exchange_id, state, actor in self.requeued]
        out += [f"MISMATCH {f.kind} {f.subject}: {f.detail}" for f in self.findings]
        out += [f"RESOLVED {kind} {subject}: no longer found" for _, kind, subject in self.resolved]
        if not self.compared:
            return [*out, f"UNKNOWN: ledger and bank could not be compared ({self.bank_error})"]
        return out or ["nothing stuck, ledger and bank agree"]


def requeue_stuck(engine: Engine, *, stuck_after: timedelta, queue: str, now: datetime | None = None,
                  limit: int = REQUEUE_BATCH) -> list[tuple[uuid.UUID, str, str]]:
    """Re-send the step of each open exchange with no step progress for `stuck_after`, through the outbox.

    The stuck clock (`progressed_at`) is moved by step outcomes only: a re-send does not reset it,
    so the exchange stays stuck (and counted) until a step moves it. `requeued_at` keeps the
    re-sends one per `stuck_after`, and is the compare-and-set two reconcilers race on.
    """
    now = now or utcnow()
    threshold = now - stuck_after
    with engine.connect() as conn:
        candidates = conn.execute(
            select(exchanges.c.id, exchanges.c.state, exchanges.c.progressed_at, exchanges.c.requeued_at,
                   exchanges.c.step_epoch)
            .where(exchanges.c.state.in_(OPEN_STATES), exchanges.c.progressed_at < threshold,
                   exchanges.c.requeued_at.is_(None) | (exchanges.c.requeued_at < threshold),
                   exchanges.c.claimed_until.is_(None) | (exchanges.c.claimed_until < now))
            .order_by(exchanges.c.progressed_at).limit(limit)
        ).all()
    requeued = []
    for row in candidates:
        actor = STEP_FOR_STATE[ExchangeState(row.state)].actor
        with engine.begin() as conn:
            moved = conn.execute(
                update(exchanges)
                .where(exchanges.c.id == row.id, exchanges.c.state == row.state,
                       exchanges.c.requeued_at.is_not_distinct_from(row.requeued_at))
                .values(requeued_at=now)
            )
            if moved.rowcount != 1:
                continue
            message_id = enqueue(conn, actor=actor, payload=step_payload(row.id, row.step_epoch), queue=queue,
                                 now=now)
            timeline.record(conn, row.id, step="reconciler", outcome="requeued", state=row.state,
                            worker="reconciler", now=now,
                            detail={"actor": actor, "message_id": str(message_id),
                                    "idle_seconds": int((now - row.progressed_at).total_seconds())})
        requeued.append((row.id, row.state, actor))
    return requeued


def compare_with_bank(engine: Engine, bank: BankClient, *, settle_after: timedelta,
                      now: datetime | None = None, full: bool = True) -> list[Finding]:
    """Per settled exchange: the credit in our ledger against the transfers the bank applied; and every
    bank transfer for no exchange of ours. Stores the findings; resolves the ones no longer found.

    `full` judges every settled exchange; otherwise only those settled since the last pass, and
    those whose bank transfers changed since then (a late payment, a reversal)."""
    return compare_ledger(engine, bank, settle_after=settle_after, now=now or utcnow(), full=full).findings


def compare_ledger(engine: Engine, bank: BankClient, *, settle_after: timedelta, now: datetime,
                   full: bool) -> Comparison:
    """`compare_with_bank`, with what it changed and what it read."""
    imported = bank_statement.import_changes(engine, bank)
    horizon = now - settle_after  # exchanges still moving may be paid at the bank and not yet here
    with engine.connect() as conn:
        since = None if full or len(imported.changed) > FULL_PASS_AFTER_CHANGES else checks.covered_through(
            conn, checks.BANK_COMPARE)
        query = select(exchanges.c.id, exchanges.c.state, exchanges.c.to_amount, exchanges.c.to_currency).where(
            exchanges.c.updated_at < horizon)
        if since is not None:
            touched = _exchange_ids(imported.references)
            query = query.where(or_(exchanges.c.updated_at >= since, exchanges.c.id.in_(touched)))
        settled = conn.execute(query).all()
        judged = {str(r.id) for r in settled}
        credits = credit_postings(conn, None if since is None else [r.id for r in settled])
        paid = bank_statement.applied_for(conn, None if since is None else judged | imported.references)
        known = _known_references(conn, {p.reference for p in paid})
    findings = compare([ExchangeFacts(r.id, r.state, r.to_amount, r.to_currency, credits.get(r.id, 0))
                        for r in settled], paid, known=known)
    strangers = None if since is None else {f"bank-transfer:{r.id}" for r in imported.changed}
    change = record_pass(engine, findings, judged=judged, judged_strangers=strangers, now=now)
    checks.record(engine, checks.BANK_COMPARE, now=now, covered_through=horizon)
    return Comparison(findings, change, judged=len(settled), bank_changes=len(imported.changed), full=since is None)


def _exchange_ids(references: set[str]) -> list[uuid.UUID]:
    ids = []
    for reference in references:
        try:
            ids.append(uuid.UUID(reference))
        except ValueError:
            continue  # not even an exchange id
    return ids


def _known_references(conn: Connection, references: set[str]) -> set[str]:
    """The bank references that name an exchange of ours."""
    ids = _exchange_ids(references)
    known: set[str] = set()
    for start in range(0, len(ids), KNOWN_BATCH):
        known.update(str(i) for i in conn.execute(
            select(exchanges.c.id).where(exchanges.c.id.in_(ids[start:start + KNOWN_BATCH]))).scalars())
    return known


def credit_postings(conn: Connection, exchange_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, int]:
    """How many credit postings each exchange (of `exchange_ids`, or every one) has in our ledger."""
    query = (select(ledger_entries.c.exchange_id, func.count(func.distinct(ledger_entries.c.posting_id)))
             .where(ledger_entries.c.kind == "credit").group_by(ledger_entries.c.exchange_id))
    if exchange_ids is None:
        return {exchange_id: n for exchange_id, n in conn.execute(query)}
    return {exchange_id: n for start in range(0, len(exchange_ids), KNOWN_BATCH)
            for exchange_id, n in conn.execute(
                query.where(ledger_entries.c.exchange_id.in_(exchange_ids[start:start + KNOWN_BATCH])))}


def reconcile_once(engine: Engine, bank: BankClient | None, *, stuck_after: timedelta, queue: str,
                   full: bool = True) -> ReconcileReport:
    """One pass (`full`: judging every settled exchange, not only what changed since the last pass).
    A comparison that could not run is reported (and recorded) as unknown, never as agreement."""
    report = ReconcileReport(requeued=requeue_stuck(engine, stuck_after=stuck_after, queue=queue))
    with engine.begin() as conn:
        counts.fold(conn)  # keeps what the dashboard and /metrics sum small
    now = utcnow()
    if bank is None:
        report.bank_error = "no bank client configured"
    else:
        try:
            comparison = compare_ledger(engine, bank, settle_after=stuck_after, now=now, full=full)
            report.findings, report.resolved = comparison.findings, comparison.change.resolved
            report.judged, report.bank_changes = comparison.judged, comparison.bank_changes
        except BankError as error:
            report.bank_error = f"bank unreachable: {error}"
    if report.bank_error is not None:  # a comparison that ran recorded itself, with how far it reached
        checks.record(engine, checks.BANK_COMPARE, now=now, error=report.bank_error)
    for line in report.lines():
        log.log(logging.WARNING if report.exit_code else logging.INFO, "%s", line)
    if report.compared:
        log.info("compared %d exchanges (%s pass), %d bank changes read", report.judged,
                 "full" if full else "incremental", report.bank_changes)
    return report


def run_loop(settings: Settings, engine: Engine, bank: BankClient, stopping: threading.Event) -> None:
    """A pass every RECONCILE_INTERVAL_SECONDS until `stopping` is set, with a heartbeat of its own."""
    heartbeat = Heartbeat(engine, ProcessRole.RECONCILER, interval_seconds=settings.heartbeat_interval_seconds).start()
    log.info("reconciler started: stuck after %.0fs, every %.0fs",
             settings.stuck_after_seconds, settings.reconcile_interval_seconds)
    full_every = timedelta(seconds=settings.reconcile_full_interval_seconds)
    last_full: datetime | None = None
    try:
        while not stopping.is_set():
            # Each pass judges what changed since the last; the first and then one a day judge all,
            # as a bank statement is checked in full at the end of the day.
            full = last_full is None or utcnow() - last_full >= full_every
            try:
                report = reconcile_once(engine, bank, stuck_after=timedelta(seconds=settings.stuck_after_seconds),
                                        queue=settings.queue_name, full=full)
                if full and report.compared:
                    last_full = utcnow()
            except Exception:  # a failed pass is retried at the next interval
                log.exception("reconciliation pass failed")
            stopping.wait(settings.reconcile_interval_seconds)
    finally:
        heartbeat.stop()
    log.info("reconciler stopped")


def run_daemon(settings: Settings, engine: Engine, bank: BankClient) -> None:
    """The reconciler process: `run_loop` until SIGTERM or SIGINT."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_loop(settings, engine, bank, stopping)
