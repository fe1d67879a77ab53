"""The step pattern, written once: claim (or defer), decide, and commit the decision fenced."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from datetime import datetime

from sqlalchemy import Connection, select

from domain.states import ExchangeState, Step, step_payload
from infra.observability import current_trace_headers
from models import exchanges
from models.base import utcnow
from outbox.writer import enqueue
from services import claims, timeline
from services.claims import Busy, Claim, LostClaim
from services.workflow.context import Delivery, StepBody, StepDeferred, StepResult, Transition, Workflow

log = logging.getLogger("workflow")


def claim_or_defer(wf: Workflow, conn: Connection, d: Delivery, step: Step, now: datetime) -> Claim | None:
    """The step's claim; None for a duplicate (ack it); StepDeferred while another worker holds it."""
    assert step.runs_in is not None, f"{step.name} does not claim"
    held = claims.claim(conn, d.exchange_id, expected=step.runs_in, step=step.name, worker=d.worker,
                        lease=wf.config.lease, now=now, epoch=d.epoch)
    if isinstance(held, Busy):
        # Another worker holds the step. Come back when its lease ends: if it died, we
        # take over; if it finished, we find the step done and acknowledge.
        wait_ms = max(100, int((held.claimed_until - now).total_seconds() * 1000) + 100)
        raise StepDeferred(f"{step.name} is claimed by {held.claimed_by} until {held.claimed_until}", wait_ms)
    return held


def commit_transition(wf: Workflow, conn: Connection, d: Delivery, held: Claim, t: Transition,
                      now: datetime, started: float) -> None:
    """Advance (fenced by the claim), enqueue the next step's message and record the timeline entry."""
    error = {} if t.keeps_last_error and t.error is None else {"last_error": t.error}
    epoch = claims.advance(conn, held, t.target, now=now, **error, **t.values)
    detail = dict(t.detail or {})
    if t.next_step is not None:
        # The next step continues this step's trace, so one trace follows the exchange.
        next_id = enqueue(conn, actor=t.next_step.actor, payload=step_payload(d.exchange_id, epoch),
                          queue=wf.config.queue, trace_headers=current_trace_headers(), now=now)
        detail["next_message_id"] = str(next_id)
    timeline.record(conn, d.exchange_id, step=held.step, outcome=t.outcome, state=t.target, attempt=held.attempt,
                    worker=d.worker, message_id=d.message_id, error=t.error, detail=detail or None,
                    duration_ms=int((time.monotonic() - started) * 1000), now=now)


def record_lost(wf: Workflow, d: Delivery, held: Claim, error: LostClaim) -> StepResult:
    log.warning("lost claim on %s (%s): writes rolled back", d.exchange_id, error)
    with wf.engine.begin() as conn:
        state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == d.exchange_id)).scalar_one()
        timeline.record(conn, d.exchange_id, step=held.step, outcome="lost_claim", state=ExchangeState(state),
                        attempt=held.attempt, worker=d.worker, message_id=d.message_id,
                        error=f"claim token {held.token} was superseded; this worker's result was discarded")
    return StepResult.LOST_CLAIM


def run_local_step(wf: Workflow, d: Delivery, step: Step, body: StepBody) -> StepResult:
    """A step with no external call: claim, work and advance in one transaction (one commit)."""
    started = time.monotonic()
    now = utcnow()
    with wf.engine.begin() as conn:
        held = claim_or_defer(wf, conn, d, step, now)
        if held is None:
            return StepResult.SKIPPED
        commit_transition(wf, conn, d, held, body(conn, held, now), now, started)
    return StepResult.ADVANCED


def record_failure(wf: Workflow, d: Delivery, step: Step, error: BaseException) -> None:
    """An unexpected exception out of a step, on the exchange's timeline (its writes rolled back).

    Best effort, in a transaction of its own: when the database itself is the failure, the
    worker's log and Sentry still have it, and Dramatiq's retry runs the step again.
    """
    text = f"{type(error).__name__}: {error}"
    try:
        with wf.engine.begin() as conn:
            state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == d.exchange_id)).scalar_one_or_none()
            if state is None:
                return
            timeline.record(conn, d.exchange_id, step=step.name, outcome="error", state=ExchangeState(state),
                            worker=d.worker, message_id=d.message_id, error=text,
                            detail={"traceback": "".join(traceback.format_exception(error, limit=-8))[-4000:]})
    except Exception:
        log.warning("could not record the failure of %s on %s: %s", step.name, d.exchange_id, text, exc_info=True)


def note_next_attempt(wf: Workflow, exchange_id: uuid.UUID, step: Step, at: datetime) -> None:
    """The broker holds `step`'s retry until `at`: kept on the exchange for the operators' pages.

    Best effort: the retry runs whether or not the note is written."""
    try:
        with wf.engine.begin() as conn:
            claims.note_next_attempt(conn, exchange_id, step=step.name, at=at)
    except Exception:
        log.warning("could not note the next attempt of %s on %s", step.name, exchange_id, exc_info=True)
