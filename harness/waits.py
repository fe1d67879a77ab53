"""Bounded waits: every wait has a deadline and says what it was waiting for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness.errors import WaitTimeout

T = TypeVar("T")

#: How often a condition is polled by default, in seconds: short, as tests wait on local processes.
POLL_INTERVAL_SECONDS = 0.05


def describe(what: str | Callable[[], str]) -> str:
    """`what` itself, or what it returns: a callable shows the state reached at the deadline."""
    return what() if callable(what) else what


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str] = "the condition",
    *,
    interval: float = POLL_INTERVAL_SECONDS,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Raises WaitTimeout naming `what` if `timeout` seconds pass first. An exception the
    predicate raises (a process that exited, say) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {describe(what)}")
        time.sleep(interval)
