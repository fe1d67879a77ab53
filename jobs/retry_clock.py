"""When a step's retry will run, told to the operators' pages.

Dramatiq's Retries middleware re-enqueues a failed message with a delay (its backoff, or the
delay a StepDeferred asked for); only the broker knows it after that. This notes the time on
the exchange as the retry is enqueued, so a page can say "next retry at 14:02:31".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import dramatiq

from domain.states import STEP_BY_ACTOR, Step
from models.base import utcnow


class RetryClock(dramatiq.Middleware):
    def __init__(self, note: Callable[[uuid.UUID, Step, datetime], None]) -> None:
        self.note = note

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        step = STEP_BY_ACTOR.get(message.actor_name)
        if step is None or not delay or not message.options.get("retries"):
            return  # a first delivery (the relay's), or not a step
        try:
            exchange_id = uuid.UUID(str(message.kwargs.get("exchange_id") or next(iter(message.args), "")))
        except ValueError:
            return  # a poison message naming no exchange: the dead letters show it
        self.note(exchange_id, step, utcnow() + timedelta(milliseconds=delay))
