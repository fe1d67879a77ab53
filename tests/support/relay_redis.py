"""The relay tests' Redis database, and fixtures that give each test a queue of its own there.

A pytest plugin (tests/conftest.py loads it). Each test deletes only its own queue's keys,
since other sessions may use the same database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import REDIS_URL, unavailable

#: A Redis database of the relay tests' own on the shared server.
RELAY_REDIS_DB = 9
RELAY_REDIS_URL = urlsplit(REDIS_URL)._replace(path=f"/{RELAY_REDIS_DB}").geturl()


def forget_queue(client: redis.Redis, queue: str) -> None:
    """Delete this test's keys only: other sessions may be using the same Redis database."""
    keys = list(client.scan_iter(match=f"dramatiq:{queue}*"))
    if keys:
        client.delete(*keys)


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
    forget_queue(client, queue)
    yield client
    forget_queue(client, queue)
    client.close()
