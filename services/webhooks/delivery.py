"""Delivering one webhook: claim it, POST the signed event, record the attempt, schedule the next.

At least once: the claim (a lease and a fencing token, as a step's) commits before the call, and
the attempt's result, with the next attempt's outbox message, commits after it. A worker killed
in between leaves the broker's message unacknowledged: it comes back, waits out the lease
(`DeliveryBusy`) and tries again. The receiver deduplicates on `webhook-id`, the same on every try.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
import urllib3
from prometheus_client import Counter
from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, update

from domain.egress import EgressRefused
from errors import WorkflowError
from models import exchanges, webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_events
from models.base import utcnow
from outbox.failpoints import failpoint
from outbox.writer import enqueue
from services import timeline
from services.webhooks import signing
from services.webhooks.egress import EgressPolicy, GuardedAdapter
from services.webhooks.endpoints import secrets_in_use
from services.webhooks.events import DELIVER_ACTOR

log = logging.getLogger("webhooks")
ATTEMPTS = Counter("fx_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"])
#: Kept of each answer: enough to see what the receiver said.
SNIPPET_CHARS = 500
#: Read of each answer at most (streamed): a receiver's answer is a status and a short text.
MAX_ANSWER_BYTES = 64 * 1024
READ_CHUNK_BYTES = 8 * 1024
#: The Standard Webhooks / Svix schedule after the first try: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
#: (27.6 hours in all): a receiver down for a day still gets every event.
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class DeliveryConfig:
    queue: str
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    timeout_seconds: float = 10.0
    #: Each delay is stretched or shrunk by up to this fraction, so retries after an outage spread out.
    jitter: float = 0.2

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout_seconds * 2 + 5)


class DeliveryBusy(WorkflowError):
    """Another attempt holds the delivery (or held it and died): come back when its lease ends."""

    def __init__(self, delay_ms: int) -> None:
        super().__init__(f"an attempt holds the delivery; back in {delay_ms} ms")
        self.delay_ms = delay_ms


def webhook_session(egress: EgressPolicy) -> requests.Session:
    """The HTTP client of the delivery actor: every connection through the egress guard, and no
    proxy or credentials from the environment (a proxy would hide where the call really goes)."""
    http = requests.Session()
    http.trust_env = False
    # One client serves every customer: a cookie one receiver sets must never ride to another.
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = GuardedAdapter(egress)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


def next_delay(attempts: int, config: DeliveryConfig, rand: random.Random | None = None) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones; None once the schedule is spent."""
    if attempts > len(config.schedule):
        return None
    base = config.schedule[attempts - 1]
    return base * (1 + (rand or random).uniform(-config.jitter, config.jitter))


_CLAIM = (
    update(webhook_deliveries)
    .where(webhook_deliveries.c.id == bindparam("d_id"), webhook_deliveries.c.status == "pending",
           webhook_deliveries.c.next_attempt_at <= bindparam("d_now"),
           or_(webhook_deliveries.c.claimed_until.is_(None), webhook_deliveries.c.claimed_until < bindparam("d_now")))
    .values(claim_token=webhook_deliveries.c.claim_token + 1, attempts=webhook_deliveries.c.attempts + 1,
            claimed_until=bindparam("d_until"))
    .returning(webhook_deliveries.c.claim_token, webhook_deliveries.c.attempts, webhook_deliveries.c.event_id,
               webhook_deliveries.c.endpoint_id)
)


def deliver(engine: Engine, http: requests.Session, config: DeliveryConfig, delivery_id: uuid.UUID,
            worker: str | None = None) -> str:
    """One attempt, if one is due: `delivered`, `retrying`, `failed` or `skipped` (not due, or done)."""
    now = utcnow()
    with engine.begin() as conn:
        held = conn.execute(_CLAIM, {"d_id": delivery_id, "d_now": now, "d_until": now + config.lease}).first()
        if held is None:
            return _not_claimed(conn, delivery_id, now)
        event = conn.execute(select(webhook_events).where(webhook_events.c.id == held.event_id)).one()
        endpoint = conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == held.endpoint_id)).one()
    if endpoint.disabled_at is not None:
        return _record(engine, config, delivery_id, held, event, (None, 0, "endpoint disabled: not sent"), worker,
                       give_up=True)
    answer = _post(http, config, endpoint, event, now)
    failpoint("webhook.after_post")  # answered, not yet recorded: the attempt must be made again
    return _record(engine, config, delivery_id, held, event, answer, worker)


class AnswerLimit(Exception):
    """The receiver's answer broke a limit (size or deadline): the attempt fails with this reason."""


def _read_bounded(answer: requests.Response, deadline: float) -> bytes:
    """The answer's body, read a receive at a time: past MAX_ANSWER_BYTES or the deadline,
    AnswerLimit. A receiver dripping a byte a second is timed between bytes, and one answering
    300 MB costs 64 KB of memory, not 300 MB."""
    body = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise AnswerLimit("no whole answer within the deadline")
        chunk = answer.raw.read1(READ_CHUNK_BYTES)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerLimit(f"answer larger than {MAX_ANSWER_BYTES // 1024} KB: not read further")


def _post(http: requests.Session, config: DeliveryConfig, endpoint: Any, event: Any,
          now: datetime) -> tuple[int | None, int, str]:
    """One call under one deadline for connect and the whole answer; what it got, as (status,
    milliseconds, snippet). Every way it can end is an answer here, never an exception."""
    headers = {**signing.headers(secrets_in_use(endpoint, now), event.id, int(time.time()), event.body),
               "accept-encoding": "identity"}  # a compressed answer would be read compressed
    started = time.monotonic()
    deadline = started + config.timeout_seconds
    try:
        answer = http.post(endpoint.url, data=event.body.encode(), headers=headers,
                           timeout=config.timeout_seconds, allow_redirects=False, stream=True)
        try:
            body = _read_bounded(answer, deadline)
        finally:
            answer.close()
        status, snippet = answer.status_code, body.decode(answer.encoding or "utf-8", "replace")[:SNIPPET_CHARS]
    except EgressRefused as refused:  # checked again at each attempt: a name may have moved
        status, snippet = None, f"refused: {refused.reason}"
    except AnswerLimit as limit:
        status, snippet = None, f"{limit} ({config.timeout_seconds:g} s, {MAX_ANSWER_BYTES // 1024} KB)"
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        status, snippet = None, f"no answer within {config.timeout_seconds:g} s"
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        status, snippet = None, f"could not connect: {type(error).__name__}"
    return status, int((time.monotonic() - started) * 1000), snippet


def _record(engine: Engine, config: DeliveryConfig, delivery_id: uuid.UUID, held: Any, event: Any,
            answer: tuple[int | None, int, str], worker: str | None, give_up: bool = False) -> str:
    """The attempt, and what follows it, fenced by the claim: a late worker records nothing. The
    exchange's timeline gets a line too (operators only: the customer's view has no webhook lines)."""
    status, latency_ms, snippet = answer
    now = utcnow()
    ok = status is not None and 200 <= status < 300
    delay = None if ok or give_up else next_delay(held.attempts, config)
    outcome = "delivered" if ok else ("failed" if delay is None else "retrying")
    values: dict[str, Any] = {"claimed_until": None, "status": "pending" if outcome == "retrying" else outcome}
    if ok:
        values["delivered_at"] = now
    if delay is not None:
        values["next_attempt_at"] = now + timedelta(seconds=delay)
    with engine.begin() as conn:
        moved = conn.execute(update(webhook_deliveries).where(
            webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.claim_token == held.claim_token)
            .values(**values)).rowcount
        if moved != 1:
            return "skipped"  # another attempt took over after this one's lease ran out
        conn.execute(insert(webhook_attempts), {
            "delivery_id": delivery_id, "attempt": held.attempts, "attempted_at": now, "status_code": status,
            "latency_ms": latency_ms, "response_snippet": snippet[:SNIPPET_CHARS], "worker": worker})
        if delay is not None:
            enqueue(conn, actor=DELIVER_ACTOR, payload={"delivery_id": str(delivery_id)}, queue=config.queue,
                    delay=timedelta(seconds=delay), now=now)
        state = conn.execute(select(exchanges.c.state).where(exchanges.c.id == event.exchange_id)).scalar_one()
        timeline.record(conn, event.exchange_id, step="webhook", outcome=f"webhook_{outcome}", state=state,
                        attempt=held.attempts, worker=worker, duration_ms=latency_ms,
                        error=None if ok else f"{event.type} answered {status}: {snippet[:200]}",
                        detail={"event": event.id, "delivery": str(delivery_id), "status": status}, now=now)
    ATTEMPTS.labels(outcome).inc()
    if outcome == "failed":
        log.warning("webhook %s for exchange %s given up after %s attempts (last: %s)", event.id,
                    event.exchange_id, held.attempts, status)
    return outcome


def _not_claimed(conn: Connection, delivery_id: uuid.UUID, now: datetime) -> str:
    row = conn.execute(select(webhook_deliveries.c.status, webhook_deliveries.c.claimed_until)
                       .where(webhook_deliveries.c.id == delivery_id)).first()
    if row is not None and row.status == "pending" and row.claimed_until is not None and row.claimed_until >= now:
        raise DeliveryBusy(int((row.claimed_until - now).total_seconds() * 1000) + 100)
    return "skipped"


def replay(engine: Engine, delivery_id: uuid.UUID, *, queue: str) -> None:
    """Send the event again now, with a fresh schedule of retries (its attempts so far stay listed)."""
    with engine.begin() as conn:
        replay_in(conn, delivery_id, queue=queue, now=utcnow())


def replay_in(conn: Connection, delivery_id: uuid.UUID, *, queue: str, now: datetime) -> None:
    """`replay`, in the caller's transaction (an operator's comes with its audit entry)."""
    conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
        status="pending", attempts=0, next_attempt_at=now, delivered_at=None))
    enqueue(conn, actor=DELIVER_ACTOR, payload={"delivery_id": str(delivery_id)}, queue=queue, now=now)
