"""A relay's waiter, watched: how many waits it began, and for each that ended, whether something
woke it and how long it lasted (the idle test and the relay bench read them)."""

from __future__ import annotations

import time

from outbox.wakeup import Waiter


class WatchedWaiter:
    def __init__(self, inner: Waiter) -> None:
        self.inner = inner
        self.waits = 0
        self.ended: list[tuple[bool, float]] = []

    @property
    def wakeups(self) -> int:
        return sum(1 for woken, _ in self.ended if woken)

    def wait(self, timeout_seconds: float) -> bool:
        self.waits += 1
        began = time.monotonic()
        woken = self.inner.wait(timeout_seconds)
        self.ended.append((woken, time.monotonic() - began))
        return woken

    def prepare(self) -> None:
        self.inner.prepare()

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()
