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

        from jobs.quorum_rabbitmq import QuorumRabbitmqBroker

        # Publisher confirms: the relay marks a row published only after RabbitMQ has it (on a
        # quorum queue: after a majority of the cluster's nodes has it).
        rabbit_class = QuorumRabbitmqBroker if settings.broker_queue_type == "quorum" else RabbitmqBroker
        return rabbit_class(url=url, confirm_delivery=True)
    return StubBroker()
