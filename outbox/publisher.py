"""Handing outbox rows to the broker as Dramatiq messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import dramatiq
import redis
from dramatiq import Message

from errors import OutboxError
from infra.observability import SENTRY_HEADERS_OPTION, continued_trace
from outbox.store import OutboxRow

#: Where the trace headers of the writing request travel inside the message: the option
#: Sentry's Dramatiq integration continues the trace from in the worker.
TRACE_OPTION = SENTRY_HEADERS_OPTION
#: Set on a message its writer sent itself (outbox/direct.py): the consumer marks the outbox row
#: published in the step's transaction, so the relay does not send it too.
TAKE_OPTION = "fx_take_outbox_row"


class PublishError(OutboxError):
    """The broker did not take the batch; the rows stay unpublished."""


class Publisher(Protocol):
    def publish(self, rows: Sequence[OutboxRow], *, taken_by_consumer: bool = False) -> None:
        """Publish every row or raise PublishError (some may have gone: at least once)."""
        ...

    def close(self) -> None: ...


def to_message(row: OutboxRow, *, taken_by_consumer: bool = False) -> Message[object]:
    """The outbox id becomes the Dramatiq message id, so every hop can be traced to the row."""
    options: dict[str, object] = {TRACE_OPTION: row.trace_headers} if row.trace_headers else {}
    if taken_by_consumer:
        options[TAKE_OPTION] = True
    return Message(
        queue_name=row.queue,
        actor_name=row.actor,
        args=(),
        kwargs=row.payload,
        options=options,
        message_id=str(row.id),
        message_timestamp=int(row.created_at.timestamp() * 1000),
    )


class BrokerPublisher:
    """One `enqueue` per message on any Dramatiq broker (RabbitMQ with confirms, in-process stub)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def publish(self, rows: Sequence[OutboxRow], *, taken_by_consumer: bool = False) -> None:
        try:
            for row in rows:
                with continued_trace(row.trace_headers, f"publish {row.actor}"):
                    self.broker.enqueue(to_message(row, taken_by_consumer=taken_by_consumer))
        except Exception as error:
            raise PublishError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self.broker.close()


class RedisPipelinePublisher:
    """Dramatiq's Redis enqueue script, for a whole batch in one round trip.

    A RedisBroker whose client is a non-transactional pipeline buffers each enqueue;
    `execute()` sends them together. The messages land exactly as `actor.send` puts
    them, so standard Dramatiq workers consume them.
    """

    def __init__(self, url: str, *, namespace: str = "dramatiq", wakeups: bool = True) -> None:
        from dramatiq.brokers.redis import RedisBroker

        from infra.waking_redis import WakingRedisBroker

        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.pipeline = self.client.pipeline(transaction=False)
        # No middleware: publishing needs none, and workers apply the actors' options. With
        # wake-ups, each enqueue's PUBLISH rides in the same pipeline: still one round trip.
        broker_class = WakingRedisBroker if wakeups else RedisBroker
        self.broker = broker_class(client=self.pipeline, namespace=namespace, middleware=[])
        # Dramatiq asks Redis for its Lua stack size once per process and caches it on
        # the class; asked through a pipeline it would get the pipeline back.
        self._direct = RedisBroker(client=self.client, namespace=namespace, middleware=[])
        self._primed = False

    def publish(self, rows: Sequence[OutboxRow], *, taken_by_consumer: bool = False) -> None:
        try:
            if not self._primed:
                self._direct._max_unpack_size()
                self._primed = True
            for row in rows:
                with continued_trace(row.trace_headers, f"publish {row.actor}"):
                    self.broker.enqueue(to_message(row, taken_by_consumer=taken_by_consumer))
            self.pipeline.execute()
        except redis.RedisError as error:
            raise PublishError(f"{type(error).__name__}: {error}") from error
        finally:
            self.pipeline.reset()

    def close(self) -> None:
        self.client.close()


def publisher_for(broker_url: str, broker: dramatiq.Broker | None = None, *, wakeups: bool = True) -> Publisher:
    """Redis gets the pipelined publisher (waking idle consumers unless `wakeups` is off);
    anything else publishes through `broker`."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisPipelinePublisher(broker_url, wakeups=wakeups)
    if broker is None:
        raise ValueError("a broker is needed for " + (broker_url or "the embedded mode"))
    return BrokerPublisher(broker)
