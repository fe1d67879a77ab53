"""Counting what an engine does (statements, commits), for tests that bound it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event


@contextmanager
def counting(engine: Engine, event_name: str, thread_name: str | None = None) -> Iterator[list[int]]:
    """Count `event_name` events on `engine` ("before_cursor_execute": statements; "commit":
    commits), only those of the thread named `thread_name` if given; the count is `[n]`."""
    counted = [0]

    def seen(*_: object) -> None:
        if thread_name is None or threading.current_thread().name == thread_name:
            counted[0] += 1

    event.listen(engine, event_name, seen)
    try:
        yield counted
    finally:
        event.remove(engine, event_name, seen)
