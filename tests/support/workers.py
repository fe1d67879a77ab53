"""A real Dramatiq worker on a Redis queue of the test's own, in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import redis
from dramatiq import Worker

import bootstrap
from harness.queues import forget_queue
from services.workflow import Workflow
from settings import Settings
from tests.conftest import REDIS_URL, unavailable
from tests.support.outbox_rows import unique_queue


def fresh_queue(label: str) -> tuple[str, str]:
    """(broker URL, queue name): a queue no other test uses, empty; skips (fails in CI) without Redis."""
    broker_url, queue = REDIS_URL, unique_queue(label)
    try:
        forget_queue(broker_url, queue)
    except redis.RedisError as error:
        unavailable("Redis", error)
    return broker_url, queue


@contextmanager
def running_worker(settings: Settings, workflow: Workflow) -> Iterator[bootstrap.Worker]:
    """The project's actors and middleware (bootstrap.build_worker) in a one-thread Dramatiq worker;
    stopped, and the previous global broker put back, on exit."""
    previous = dramatiq.get_broker()
    parts = bootstrap.build_worker(settings, workflow=workflow)
    worker = Worker(parts.broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        yield parts
    finally:
        worker.stop()
        parts.broker.close()
        dramatiq.set_broker(previous)
