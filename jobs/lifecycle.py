"""A worker process's life as Dramatiq's middleware sees it: booted, stopping, and what it holds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq

#: How many of the messages in hand a heartbeat names (the count is always whole).
LISTED_IN_HAND = 10


class ProcessLifecycle(dramatiq.Middleware):
    """Calls `on_boot` once the worker process has booted and `on_shutdown` before it stops;
    `in_hand()` says which steps it is running now (for its heartbeat)."""

    def __init__(self, on_boot: Callable[[], None], on_shutdown: Callable[[], None]) -> None:
        self.on_boot = on_boot
        self.on_shutdown = on_shutdown
        self._lock = threading.Lock()
        self._in_hand: dict[str, dict[str, Any]] = {}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.on_boot()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.on_shutdown()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        with self._lock:
            self._in_hand[message.message_id] = {"actor": message.actor_name,
                                                 "exchange_id": (message.kwargs or {}).get("exchange_id")
                                                 or next(iter(message.args), None)}

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        with self._lock:
            self._in_hand.pop(message.message_id, None)

    after_skip_message = after_process_message

    def in_hand(self) -> dict[str, Any]:
        with self._lock:
            listed = list(self._in_hand.values())
        return {"in_hand": len(listed), "steps": listed[:LISTED_IN_HAND]}
