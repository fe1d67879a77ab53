"""The webhook delivery actor: thin, delegating to services.webhooks.delivery."""

from __future__ import annotations

import uuid

import dramatiq
import sentry_sdk
from sqlalchemy import Engine

from jobs.actors import actor_options, worker_id
from services.webhooks.delivery import DeliveryBusy, DeliveryConfig, deliver, webhook_session
from services.webhooks.egress import EgressPolicy
from services.webhooks.events import DELIVER_ACTOR
from settings import Settings


def delivery_config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig(queue=settings.queue_name, schedule=settings.webhook_schedule,
                          timeout_seconds=settings.webhook_timeout_seconds)


def declare_webhook_actor(broker: dramatiq.Broker, settings: Settings, engine: Engine) -> dramatiq.Actor:
    """Its own schedule lives in the outbox (each failed attempt enqueues the next, delayed), so
    Dramatiq's retries only cover a worker that died mid-attempt or a database that did not answer."""
    config = delivery_config(settings)
    http = webhook_session(EgressPolicy(settings.webhook_networks))

    def deliver_webhook(delivery_id: str) -> None:
        sentry_sdk.set_tag("webhook_delivery", delivery_id)
        try:
            deliver(engine, http, config, uuid.UUID(delivery_id), worker=worker_id())
        except DeliveryBusy as busy:
            raise dramatiq.Retry(str(busy), delay=busy.delay_ms) from None

    time_limit_ms = int(config.lease.total_seconds() * 1000)
    return dramatiq.actor(deliver_webhook, actor_name=DELIVER_ACTOR, broker=broker,
                          **actor_options(settings, time_limit_ms=time_limit_ms))
