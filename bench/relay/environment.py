"""The relay benchmark's servers and instruments: a scratch database, a Redis database of its own
(flushed), and counters around the relay's publisher and waiter."""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench.relay.meter import RelayCpuMeter
from harness import queues
from harness.databases import ScratchDatabase, scratch_name
from infra import migrate
from infra.database import make_engine
from outbox.publisher import Publisher
from outbox.store import OutboxRow

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
QUEUE = "bench_relay"
ACTOR = "bench_step"
#: Hosts where PostgreSQL's processes are ours to read in /proc.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def payload_for(message_id: uuid.UUID, sent_at: float) -> dict[str, Any]:
    """The kwargs of every message, relayed or sent: the shape of an exchange step."""
    return {"exchange_id": str(message_id), "step": "quote", "attempt": 1, "sent_at": sent_at}


@dataclass
class Environment:
    url: str
    database: str
    engine: Engine
    redis_url: str
    redis: redis.Redis
    meter: RelayCpuMeter
    versions: str


@contextmanager
def environment(admin_url: str, redis_url: str) -> Iterator[Environment]:
    """A fresh, migrated PostgreSQL database and an empty Redis database; both removed afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        with ScratchDatabase(admin_url, scratch_name("bench")) as database:
            pg_version = database.server_version()
            engine = make_engine(database.url, pool_size=10, max_overflow=10)
            try:
                migrate.upgrade(engine)
                client.flushdb()
                versions = (
                    f"Python {platform.python_version()}, dramatiq {dramatiq.__version__}, "
                    f"PostgreSQL {pg_version}, Redis {client.info('server')['redis_version']}"
                )
                local = (make_url(admin_url).host or "localhost") in LOCAL_HOSTS
                yield Environment(url=database.url, database=database.name, engine=engine, redis_url=redis_url,
                                  redis=client, meter=RelayCpuMeter(database.name, client, postgres_is_local=local),
                                  versions=versions)
            finally:
                engine.dispose()
    finally:
        client.flushdb()
        client.close()


def reset(env: Environment) -> None:
    with env.engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox_messages"))
    env.redis.flushdb()


def queue_length(env: Environment) -> int:
    """Messages on the queue a worker pops (nothing is delayed here)."""
    return int(env.redis.llen(f"{queues.NAMESPACE}:{QUEUE}"))


class CountingPublisher:
    """Counts batches around the real publisher."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.batches = 0
        self.messages = 0

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        self.inner.publish(rows)
        self.batches += 1
        self.messages += len(rows)

    def close(self) -> None:
        self.inner.close()
