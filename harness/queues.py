"""Dramatiq's queues on Redis, read and cleared directly (no broker, no worker).

Dramatiq's Redis broker keeps, per queue, a list of per-enqueue ids (`dramatiq:<q>`) and a
hash from those ids to the message JSON (`dramatiq:<q>.msgs`), the same for its delay
(`.DQ`) and dead-letter (`.XQ`) queues, and per worker a set of fetched, unacknowledged ids
(`dramatiq:__acks__.<worker id>.<q>`). The message's own id (our outbox id) is in the JSON.
"""

from __future__ import annotations

import json
from collections import Counter

import redis

#: Dramatiq's key namespace on Redis.
NAMESPACE = "dramatiq"


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def forget_queue(url: str, queue: str) -> None:
    """Delete every key Dramatiq keeps for `queue`: messages, delayed, dead-lettered, unacknowledged.

    Only this queue's keys: other sessions may be using the same Redis database.
    """
    client = _client(url)
    try:
        keys = [*client.scan_iter(f"{NAMESPACE}:{queue}*"), *client.scan_iter(f"{NAMESPACE}:__acks__.*.{queue}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def queued(url: str, queue: str) -> int:
    """Messages waiting in `queue` or its delay queue (fetched, in-flight ones not counted)."""
    client = _client(url)
    try:
        return sum(int(client.llen(f"{NAMESPACE}:{q}")) for q in (queue, f"{queue}.DQ"))
    finally:
        client.close()


def message_ids(url: str, queue: str) -> Counter[str]:
    """Dramatiq message ids waiting on `queue`, counted once per enqueue.

    The list and the hash must agree, or the queue is corrupt (an AssertionError says so).
    """
    client = _client(url)
    try:
        base = f"{NAMESPACE}:{queue}"
        listed = Counter(client.lrange(base, 0, -1))
        stored = client.hgetall(f"{base}.msgs")
    finally:
        client.close()
    assert set(listed) == set(stored) and max(listed.values(), default=1) == 1, (
        f"Redis queue {queue}: the list ({sum(listed.values())} ids) and the hash ({len(stored)}) disagree"
    )
    return Counter(json.loads(body)["message_id"] for body in stored.values())


def held_messages(url: str, queue: str) -> dict[str, set[str]]:
    """Per Dramatiq worker id, the message ids it fetched from `queue` and has not acknowledged."""
    client = _client(url)
    try:
        prefix = f"{NAMESPACE}:__acks__."
        held: dict[str, set[str]] = {}
        for key in client.scan_iter(match=f"{prefix}*.{queue}"):
            worker_id = key.decode()[len(prefix):-len(f".{queue}")]
            enqueue_ids = list(client.smembers(key))
            bodies = client.hmget(f"{NAMESPACE}:{queue}.msgs", enqueue_ids) if enqueue_ids else []
            ids = {json.loads(body)["message_id"] for body in bodies if body is not None}
            if ids:
                held[worker_id] = ids
        return held
    finally:
        client.close()
