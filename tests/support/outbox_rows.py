"""Outbox rows written in bulk, and what the brokers hold of them.

The brokers are read directly (no worker), so a message published twice is seen twice:
Dramatiq's message id is the outbox id, and no broker deduplicates it.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import pika
import pika.exceptions
from sqlalchemy import Engine, func, select

from harness import queues
from harness.slots import current_slot
from models import outbox_messages
from outbox.writer import enqueue

#: The actor named on the probe messages; nothing consumes them, so it needs no definition.
PROBE_ACTOR = "fault_probe"
#: AMQP's reply code for a queue that does not exist.
NOT_FOUND = 404


def unique_queue(prefix: str) -> str:
    """A queue name no other test (or run) uses, so its broker keys are this test's alone; it
    starts with the test worker's name, so a leftover queue says whose it was."""
    return f"{current_slot().name}-{prefix}-{uuid.uuid4().hex[:12]}"


def insert_messages(engine: Engine, queue: str, count: int, *, per_transaction: int = 1_000) -> list[uuid.UUID]:
    """Write `count` outbox messages through `outbox.writer.enqueue`, `per_transaction` per commit."""
    ids: list[uuid.UUID] = []
    while len(ids) < count:
        with engine.begin() as conn:
            for _ in range(min(per_transaction, count - len(ids))):
                ids.append(enqueue(conn, actor=PROBE_ACTOR, payload={"n": len(ids)}, queue=queue))
    return ids


@dataclass(frozen=True)
class OutboxState:
    id: uuid.UUID
    published_at: datetime | None
    attempts: int
    last_error: str | None


def outbox_states(engine: Engine, queue: str) -> list[OutboxState]:
    t = outbox_messages
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.published_at, t.c.attempts, t.c.last_error).where(t.c.queue == queue)
        )
        return [OutboxState(*row) for row in rows]


def unpublished_ids(engine: Engine, queue: str) -> set[uuid.UUID]:
    t = outbox_messages
    with engine.connect() as conn:
        return set(conn.scalars(select(t.c.id).where(t.c.queue == queue, t.c.published_at.is_(None))))


def unpublished_count(engine: Engine, queue: str) -> int:
    t = outbox_messages
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count()).select_from(t).where(t.c.queue == queue, t.c.published_at.is_(None))
        ) or 0


def duplicates(deliveries: Counter[str]) -> int:
    """Deliveries beyond the first of each message."""
    return sum(deliveries.values()) - len(deliveries)


def as_strings(ids: list[uuid.UUID] | set[uuid.UUID]) -> set[str]:
    return {str(message_id) for message_id in ids}


# RabbitMQ ----------------------------------------------------------------------------


def rabbitmq_queue_names(queue: str) -> list[str]:
    """The queues Dramatiq's RabbitmqBroker declares for `queue`: itself, delayed, dead letters."""
    return [queue, f"{queue}.DQ", f"{queue}.XQ"]


def rabbitmq_message_ids(url: str, queue: str) -> Counter[str]:
    """Take every message off `queue` (auto-ack) and count their Dramatiq message ids."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        counted: Counter[str] = Counter()
        while True:
            try:
                method, _properties, body = channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == NOT_FOUND:  # nothing was ever published to it
                    return counted
                raise
            if method is None:
                return counted
            counted[json.loads(body)["message_id"]] += 1
    finally:
        connection.close()


def delete_rabbitmq_queues(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in rabbitmq_queue_names(queue):
            channel.queue_delete(name)
    finally:
        connection.close()


# One interface over both brokers, for tests parametrised by broker -------------------


class RedisProbe:
    """Reads a Redis broker's queues; deletes the queues it named when the test ends."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []

    def new_queue(self, prefix: str) -> str:
        queue = unique_queue(prefix)
        self.queues.append(queue)
        return queue

    def deliveries(self, queue: str) -> Counter[str]:
        """Every enqueue onto `queue` so far, by message id (nothing consumes them)."""
        return queues.message_ids(self.url, queue)

    def cleanup(self) -> None:
        for queue in self.queues:
            queues.forget_queue(self.url, queue)


class RabbitmqProbe:
    """Takes messages off RabbitMQ queues and remembers them, so reads add up over a test."""

    name = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self._taken: dict[str, Counter[str]] = {}

    def new_queue(self, prefix: str) -> str:
        queue = unique_queue(prefix)
        self.queues.append(queue)
        return queue

    def deliveries(self, queue: str) -> Counter[str]:
        """Every message published to `queue` so far: those taken before plus those waiting now."""
        taken = self._taken.setdefault(queue, Counter())
        taken.update(rabbitmq_message_ids(self.url, queue))
        return Counter(taken)

    def cleanup(self) -> None:
        for queue in self.queues:
            delete_rabbitmq_queues(self.url, queue)
