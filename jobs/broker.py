"""Building the Dramatiq broker from settings: Redis, RabbitMQ, or in-process (embedded)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from settings import Settings


def build_broker(settings: Settings) -> dramatiq.Broker:
    broker = _broker_for(settings)
    # Steps read the message id (the outbox row id) for the timeline.
    broker.add_middleware(CurrentMessage())
    return broker


def _broker_for(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        from infra.waking_redis import WakingRedisBroker

        # Each enqueue wakes the idle consumers: a hop costs no poll interval (infra/waking_redis.py).
        broker_class = WakingRedisBroker if settings.broker_wakeups else RedisBroker
        return broker_class(
            url=url,
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
        )
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # Publisher confirms: the relay marks a row published only after RabbitMQ has it.
        return RabbitmqBroker(url=url, confirm_delivery=True)
    return StubBroker()
