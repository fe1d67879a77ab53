"""The test worker's Redis database on the shared server, and fixtures that give each test a queue of its own.

A pytest plugin (tests/conftest.py loads it). The database is never flushed: runs of the
suite may overlap (another session), so each test deletes only its own queue's keys
(harness.queues.forget_queue).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from harness.queues import forget_queue
from tests.conftest import REDIS_URL, unavailable
from tests.support.outbox_rows import unique_queue


@pytest.fixture
def queue() -> str:
    return unique_queue("relay-test")


@pytest.fixture
def redis_client(queue: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        unavailable("Redis", error)
    forget_queue(REDIS_URL, queue)
    yield client
    forget_queue(REDIS_URL, queue)
    client.close()
