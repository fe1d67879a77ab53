"""Messages Dramatiq gave up on (its dead-letter queue), for the dashboard."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    actor: str
    exchange_id: str | None
    dead_since: datetime


def from_redis(url: str, queue: str, *, limit: int = 20,
               namespace: str = "dramatiq") -> tuple[int | None, list[DeadLetter]]:
    """(total, newest `limit`) of the queue's dead letters; (None, []) if Redis cannot be read: unknown, not 0."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    xq = f"{namespace}:{queue}.XQ"
    try:
        total = client.zcard(xq)
        newest = client.zrevrange(xq, 0, limit - 1, withscores=True)
        bodies = client.hmget(f"{xq}.msgs", [member for member, _ in newest]) if newest else []
    except redis.RedisError as error:
        log.warning("cannot read dead letters: %s", error)
        return None, []
    finally:
        client.close()
    letters = []
    for (_, score), body in zip(newest, bodies, strict=True):
        if body is None:
            continue
        message = json.loads(body)
        letters.append(DeadLetter(
            message_id=message.get("message_id", "?"),
            actor=message.get("actor_name", "?"),
            exchange_id=(message.get("kwargs") or {}).get("exchange_id"),
            dead_since=datetime.fromtimestamp(score / 1000, UTC),
        ))
    return total, letters
