"""The tests' Redis databases on the shared server, and fixtures that give each test a queue of its own.

A pytest plugin (tests/conftest.py loads it). The databases are never flushed: runs of the
suite may overlap (another session, pytest-xdist), so each test deletes only its own
queue's keys (harness.queues.forget_queue).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from harness.queues import forget_queue
from tests.conftest import REDIS_URL, unavailable

#: A Redis database of the relay tests' own on the shared server.
RELAY_REDIS_DB = 9
RELAY_REDIS_URL = urlsplit(REDIS_URL)._replace(path=f"/{RELAY_REDIS_DB}").geturl()
#: A Redis database of the workflow process tests' own on the shared server.
WORKFLOW_REDIS_DB = 10


def workflow_redis_url(base_url: str) -> str:
    return urlsplit(base_url)._replace(path=f"/{WORKFLOW_REDIS_DB}").geturl()


@pytest.fixture
def queue() -> str:
    return f"relay-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(queue: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(RELAY_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        unavailable("Redis", error)
    forget_queue(RELAY_REDIS_URL, queue)
    yield client
    forget_queue(RELAY_REDIS_URL, queue)
    client.close()
