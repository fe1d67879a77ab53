"""The exchange's actors: thin, each delegating to its step in services.workflow.

Declared by the composition root (bootstrap.build_worker) on the broker and with the
workflow it gives. Retries (with backoff) and time limits come from Dramatiq's middleware,
configured per actor from settings. A step that must wait raises StepDeferred, which
becomes `dramatiq.Retry` (retried after the delay it asks for, without an error log).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import dramatiq
import sentry_sdk
from dramatiq.middleware import CurrentMessage
from prometheus_client import Counter

from domain.states import STEP_BY_ACTOR
from outbox.publisher import TAKE_OPTION
from services.workflow import STEPS, Delivery, StepDeferred, StepResult, Workflow
from services.workflow.runner import record_failure
from settings import Settings

log = logging.getLogger("jobs.actors")
STEP_RESULTS = Counter("fx_step_results_total", "Step deliveries by step and result (skipped: a duplicate)",
                       ["step", "result"])
#: What a worker logs for a delivery of a step the exchange is already past.
DUPLICATE_LOG = "a duplicate delivery (the step is already past), acknowledged with no effect"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def actor_options(settings: Settings, *, time_limit_ms: int | None = None) -> dict[str, object]:
    """The queue, retries with backoff and time limit every actor of ours is declared with."""
    return {
        "queue_name": settings.queue_name,
        "max_retries": settings.step_max_retries,
        "min_backoff": settings.step_min_backoff_ms,
        "max_backoff": settings.step_max_backoff_ms,
        "time_limit": settings.step_time_limit_ms if time_limit_ms is None else time_limit_ms,
    }


def declare_actors(broker: dramatiq.Broker, settings: Settings, workflow: Workflow) -> dict[str, dramatiq.Actor]:
    """One actor per step of the state machine, bound to `broker`, running `workflow`'s steps."""
    return {name: _declare(name, broker, settings, workflow) for name in STEPS}


def _declare(actor_name: str, broker: dramatiq.Broker, settings: Settings, workflow: Workflow) -> dramatiq.Actor:
    step = STEPS[actor_name]

    def run(exchange_id: str, epoch: int = 0) -> None:
        sentry_sdk.set_tag("exchange_id", exchange_id)
        sentry_sdk.set_tag("step", actor_name)
        message = CurrentMessage.get_current_message()
        delivery = Delivery(
            exchange_id=uuid.UUID(exchange_id),
            worker=worker_id(),
            message_id=uuid.UUID(message.message_id) if message is not None else None,
            epoch=epoch,
            # Sent by its writer straight after the commit: the step takes the outbox row.
            inline=bool(message is not None and message.options.get(TAKE_OPTION)),
        )
        try:
            result = step(workflow, delivery)
        except StepDeferred as deferred:
            raise dramatiq.Retry(str(deferred), delay=deferred.delay_ms) from None
        except Exception as error:
            # On the timeline too, not only in the worker's log; Dramatiq retries it (with backoff).
            record_failure(workflow, delivery, STEP_BY_ACTOR[actor_name], error)
            raise
        STEP_RESULTS.labels(actor_name, str(result)).inc()
        log.debug("%s %s: %s", actor_name, exchange_id, result)  # harness/worker_logs.py reads this line
        if result is StepResult.SKIPPED:  # at-least-once delivery at work: harmless, and worth counting
            log.info("%s %s: %s", actor_name, exchange_id, DUPLICATE_LOG)

    run.__name__ = run.__qualname__ = actor_name
    return dramatiq.actor(run, actor_name=actor_name, broker=broker, **actor_options(settings))
