"""Messages Dramatiq gave up on (its dead-letter queue): read them, and replay or delete them.

On Redis a dead letter is a member of the sorted set `<ns>:<queue>.XQ` (scored by when it
died) with its body in the hash `<ns>:<queue>.XQ.msgs`. A replay sends the step again through
the outbox, in one transaction with the timeline note and the audit entry, and only then takes
the letter off the queue: a crash between the two leaves a spare letter, never a lost one
(and a second replay is absorbed by the step claim).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import Engine, select

from domain import states as machine
from domain.states import is_terminal
from errors import ActionRefused, NotFound
from models import exchanges
from models.base import utcnow
from ops import audit
from outbox.writer import enqueue
from services import timeline

log = logging.getLogger(__name__)

#: Dead letters one bulk action takes at most (a bulk action is repeated for more).
BULK_LIMIT = 500


class UnknownDeadLetter(NotFound):
    code = "unknown_dead_letter"


@dataclass(frozen=True)
class DeadLetter:
    redis_id: str
    message_id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    dead_since: datetime
    retries: int | None
    traceback: str | None
    #: The exchange's state now (filled in by `with_states`); None when it has none.
    exchange_state: str | None = None

    @property
    def exchange_id(self) -> str | None:
        return self.kwargs.get("exchange_id") or (str(self.args[0]) if self.args else None)

    @property
    def exchange_uuid(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(str(self.exchange_id))
        except ValueError:
            return None

    @property
    def last_error(self) -> str | None:
        """The traceback's last line: the exception and its message."""
        lines = [line for line in (self.traceback or "").strip().splitlines() if line.strip()]
        return lines[-1] if lines else None

    @property
    def resolved(self) -> bool:
        """Its exchange has ended since: nothing is left to replay."""
        return self.exchange_state is not None and is_terminal(self.exchange_state)


class DeadLetterQueue:
    """One queue's dead letters on Redis. Reads raise redis.RedisError when Redis cannot be reached."""

    def __init__(self, url: str, queue: str, *, namespace: str = "dramatiq") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.key = f"{namespace}:{queue}.XQ"

    def count(self) -> int:
        return int(self.client.zcard(self.key))

    def newest(self, limit: int) -> list[DeadLetter]:
        members = self.client.zrevrange(self.key, 0, limit - 1, withscores=True)
        bodies = self.client.hmget(f"{self.key}.msgs", [m for m, _ in members]) if members else []
        return [_decode(m, score, body) for (m, score), body in zip(members, bodies, strict=True) if body]

    def get(self, message_id: str) -> DeadLetter | None:
        return next((d for d in self.newest(BULK_LIMIT * 4) if message_id in (d.message_id, d.redis_id)), None)

    def remove(self, letter: DeadLetter) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.key, letter.redis_id)
            pipe.hdel(f"{self.key}.msgs", letter.redis_id)
            pipe.execute()

    def close(self) -> None:
        self.client.close()


def _decode(member: bytes, score: float, body: bytes) -> DeadLetter:
    message = json.loads(body)
    options = message.get("options") or {}
    return DeadLetter(redis_id=member.decode(), message_id=message.get("message_id", "?"),
                      actor=message.get("actor_name", "?"), args=list(message.get("args") or []),
                      kwargs=dict(message.get("kwargs") or {}), dead_since=datetime.fromtimestamp(score / 1000, UTC),
                      retries=options.get("retries"), traceback=options.get("traceback"))


def with_states(engine: Engine, letters: list[DeadLetter]) -> list[DeadLetter]:
    """The letters with their exchanges' current states, so the ended ones show as resolved."""
    ids = [d.exchange_uuid for d in letters if d.exchange_uuid is not None]
    if not ids:
        return letters
    with engine.connect() as conn:
        states = {str(i): s for i, s in conn.execute(select(exchanges.c.id, exchanges.c.state)
                                                    .where(exchanges.c.id.in_(ids)))}
    return [DeadLetter(**{**d.__dict__, "exchange_state": states.get(str(d.exchange_uuid))}) for d in letters]


def from_redis(url: str, queue: str, *, limit: int = 20) -> tuple[int | None, list[DeadLetter]]:
    """(total, newest `limit`) of the queue's dead letters; (None, []) if Redis cannot be read: unknown, not 0."""
    dlq = DeadLetterQueue(url, queue)
    try:
        return dlq.count(), dlq.newest(limit)
    except redis.RedisError as error:
        log.warning("cannot read dead letters: %s", error)
        return None, []
    finally:
        dlq.close()


def replay(engine: Engine, dlq: DeadLetterQueue, message_id: str, operator: str, *, queue: str) -> str:
    """Send the dead letter's step again (a fresh message through the outbox), then drop the letter."""
    letter = _letter(dlq, message_id)
    exchange_id = letter.exchange_uuid
    if exchange_id is None or letter.actor not in machine.STEP_BY_ACTOR:
        raise ActionRefused(f"Message {letter.message_id} names no exchange step ({letter.actor}, "
                            f"{letter.exchange_id!r}): there is nothing to replay; delete it.")
    now = utcnow()
    with engine.begin() as conn:
        current = conn.execute(select(exchanges.c.state, exchanges.c.step_epoch)
                               .where(exchanges.c.id == exchange_id)).first()
        if current is None:
            raise ActionRefused(f"Exchange {exchange_id} does not exist: there is nothing to replay; delete it.")
        state = current.state
        new_id = enqueue(conn, actor=letter.actor, payload=machine.step_payload(exchange_id, current.step_epoch),
                         queue=queue, now=now)
        detail = {"dead_message_id": letter.message_id, "actor": letter.actor, "message_id": str(new_id)}
        timeline.record(conn, exchange_id, step="operator", outcome="dead_letter_replayed", state=state,
                        worker=f"operator:{operator}", detail={"operator": operator, **detail}, now=now)
        audit.record(conn, operator=operator, action="replay_dead_letter", subject=f"message {letter.message_id}",
                     exchange_id=exchange_id, result=f"{letter.actor} sent again as {new_id}", now=now, **detail)
    dlq.remove(letter)
    return f"{letter.actor} sent again as message {new_id}"


def delete(engine: Engine, dlq: DeadLetterQueue, message_id: str, operator: str) -> str:
    """Drop the dead letter for good (it is written to the audit trail, with its body)."""
    letter = _letter(dlq, message_id)
    now = utcnow()
    with engine.begin() as conn:
        audit.record(conn, operator=operator, action="delete_dead_letter", subject=f"message {letter.message_id}",
                     exchange_id=letter.exchange_uuid, result="deleted", now=now, actor=letter.actor,
                     args=letter.args, kwargs=letter.kwargs, last_error=letter.last_error)
    dlq.remove(letter)
    return f"message {letter.message_id} deleted"


def bulk(engine: Engine, dlq: DeadLetterQueue, action: str, operator: str, *, queue: str,
         actor: str | None = None) -> str:
    """Replay or delete every dead letter (of `actor`, when given); refusals are counted, not fatal."""
    done, refused = 0, 0
    for letter in dlq.newest(BULK_LIMIT):
        if actor and letter.actor != actor:
            continue
        try:
            if action == "replay":
                replay(engine, dlq, letter.redis_id, operator, queue=queue)
            else:
                delete(engine, dlq, letter.redis_id, operator)
            done += 1
        except ActionRefused:
            refused += 1
    return f"{action}: {done} done" + (f", {refused} refused (nothing to replay)" if refused else "")


def _letter(dlq: DeadLetterQueue, message_id: str) -> DeadLetter:
    try:
        letter = dlq.get(message_id)
    except redis.RedisError as error:
        raise ActionRefused(f"The broker cannot be read ({error}); try again later.") from None
    if letter is None:
        raise UnknownDeadLetter(f"No dead letter {message_id} (replayed or deleted already?).")
    return letter
