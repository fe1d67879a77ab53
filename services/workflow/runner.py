"""What every step shares: claim (or defer), and what is written when a step loses its claim or fails."""

from __future__ import annotations

import logging
import traceback
import uuid
from datetime import datetime

from sqlalchemy import Connection, select

from domain.states import ExchangeState, Step
from models import exchanges
from services import claims, timeline
from services.claims import Busy, Claim, LostClaim
from services.workflow.context import Delivery, StepDeferred, StepResult, Workflow

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


def record_lost(wf: Workflow, d: Delivery, held: Claim, error: LostClaim) -> StepResult:
    log.warning("lost claim on %s (%s): writes rolled back", d.exchange_id, error)
    with wf.engine.begin() as conn:
        state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == d.exchange_id)).scalar_one()
        timeline.record(conn, d.exchange_id, step=held.step, outcome="lost_claim", state=ExchangeState(state),
                        attempt=held.attempt, worker=d.worker, message_id=d.message_id,
                        error=f"claim token {held.token} was superseded; this worker's result was discarded")
    return StepResult.LOST_CLAIM


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
