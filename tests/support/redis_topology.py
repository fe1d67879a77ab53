"""A test's process topology on a Redis queue of its own: the queue forgotten before and after,
every process stopped at the end and described (shown when the test failed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import Engine

from harness.designs import TEST_ENV
from harness.queues import forget_queue
from harness.topology import Topology
from tests.conftest import REDIS_URL, unavailable
from tests.support.outbox_rows import unique_queue


@contextmanager
def redis_topology(engine: Engine, database_url: str, log_dir: Path, queue_prefix: str,
                   env: Mapping[str, str] = TEST_ENV) -> Iterator[Topology]:
    queue = unique_queue(queue_prefix)
    try:
        forget_queue(REDIS_URL, queue)
    except redis.RedisError as error:
        unavailable("Redis", error)
    topo = Topology(log_dir=log_dir, engine=engine, database_url=database_url, broker_url=REDIS_URL, queue=queue,
                    env=env)
    try:
        yield topo
    finally:
        topo.stop_all()
        print(topo.describe())
        forget_queue(REDIS_URL, queue)
