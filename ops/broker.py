"""What the broker holds, read from the broker itself: per queue, ready, delayed, in flight and dead.

`None` counts mean the broker could not be read: the page and the metrics say unknown, never 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)

#: Dramatiq's key namespace on Redis.
NAMESPACE = "dramatiq"


@dataclass(frozen=True)
class QueueView:
    name: str
    ready: int
    delayed: int
    #: Fetched by a worker and not yet acknowledged (Redis only; RabbitMQ does not say).
    in_flight: int | None
    dead: int


@dataclass(frozen=True)
class BrokerView:
    kind: str  # redis / rabbitmq / in-process
    up: bool
    queues: tuple[QueueView, ...] = ()
    error: str | None = None

    @property
    def dead_letters(self) -> int | None:
        return sum(q.dead for q in self.queues) if self.up else None


def amqp_parameters(url: str) -> list[Any]:
    """A cluster's nodes, `;`-separated as Dramatiq takes them: pika tries each in turn."""
    import pika

    return [pika.URLParameters(part) for part in url.split(";") if part]


def read(broker_url: str, queue: str) -> BrokerView:
    if broker_url.startswith(("redis://", "rediss://")):
        return _redis(broker_url, queue)
    if broker_url.startswith(("amqp://", "amqps://")):
        return _rabbitmq(broker_url, queue)
    # The embedded mode's broker lives in another thread of the same process: nothing to read over a wire.
    return BrokerView("in-process", up=True)


def reachable(broker_url: str, *, timeout: float = 1.0) -> bool:
    """Whether the broker answers at all: a PING, or an AMQP connection opened and closed."""
    if broker_url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
    if broker_url.startswith(("amqp://", "amqps://")):
        import pika
        import pika.exceptions

        candidates = amqp_parameters(broker_url)
        for parameters in candidates:
            parameters.socket_timeout = parameters.blocked_connection_timeout = timeout
            parameters.connection_attempts = 1
        try:
            pika.BlockingConnection(candidates).close()
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True
    return True  # the embedded broker lives in this process


def _redis(url: str, queue: str) -> BrokerView:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    base = f"{NAMESPACE}:{queue}"
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(base)
            pipe.llen(f"{base}.DQ")
            pipe.zcard(f"{base}.XQ")
            ready, delayed, dead = pipe.execute()
        in_flight = sum(int(client.scard(key)) for key in client.scan_iter(f"{NAMESPACE}:__acks__.*.{queue}"))
    except redis.RedisError as error:
        log.warning("cannot read the broker: %s", error)
        return BrokerView("redis", up=False, error=str(error))
    finally:
        client.close()
    return BrokerView("redis", up=True, queues=(QueueView(queue, int(ready), int(delayed), in_flight, int(dead)),))


def _rabbitmq(url: str, queue: str) -> BrokerView:
    import pika
    import pika.exceptions

    try:
        connection = pika.BlockingConnection(amqp_parameters(url))
    except pika.exceptions.AMQPError as error:
        return BrokerView("rabbitmq", up=False, error=str(error) or type(error).__name__)
    try:
        counts = []
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel = connection.channel()
            try:
                counts.append(channel.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                counts.append(0)  # not declared yet: nothing was ever sent there
    except pika.exceptions.AMQPError as error:
        return BrokerView("rabbitmq", up=False, error=str(error) or type(error).__name__)
    finally:
        connection.close()
    return BrokerView("rabbitmq", up=True, queues=(QueueView(queue, counts[0], counts[1], None, counts[2]),))
