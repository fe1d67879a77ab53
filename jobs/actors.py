"""The exchange's actors: thin, each delegating to its step in services.workflow.

Retries (with backoff) and time limits come from Dramatiq's middleware, configured per
actor from settings. A step that must wait raises StepDeferred, which becomes
`dramatiq.Retry` (retried after the delay it asks for, without an error log).
"""

from __future__ import annotations

import logging
import uuid

import dramatiq
import sentry_sdk
from dramatiq.middleware import CurrentMessage

from jobs import runtime
from services.workflow import STEPS, Delivery, StepDeferred
from settings import Settings

log = logging.getLogger("jobs.actors")

_settings = Settings.from_env()


def _declare(actor_name: str) -> dramatiq.Actor:
    step = STEPS[actor_name]

    def run(exchange_id: str) -> None:
        sentry_sdk.set_tag("exchange_id", exchange_id)
        sentry_sdk.set_tag("step", actor_name)
        message = CurrentMessage.get_current_message()
        delivery = Delivery(
            exchange_id=uuid.UUID(exchange_id),
            worker=runtime.worker_id(),
            message_id=uuid.UUID(message.message_id) if message is not None else None,
        )
        try:
            result = step(runtime.workflow(), delivery)
        except StepDeferred as deferred:
            raise dramatiq.Retry(str(deferred), delay=deferred.delay_ms) from None
        log.debug("%s %s: %s", actor_name, exchange_id, result)

    run.__name__ = run.__qualname__ = actor_name
    return dramatiq.actor(
        run,
        actor_name=actor_name,
        queue_name=_settings.queue_name,
        max_retries=_settings.step_max_retries,
        min_backoff=_settings.step_min_backoff_ms,
        max_backoff=_settings.step_max_backoff_ms,
        time_limit=_settings.step_time_limit_ms,
    )


ACTORS: dict[str, dramatiq.Actor] = {name: _declare(name) for name in STEPS}
