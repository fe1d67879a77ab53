"""Running calls in threads released all at once, to race them against each other."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def all_at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run each call in its own thread, all released by one barrier; results in call order.

    A call that raises fails the race, naming every exception.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as error:  # recorded, so the assertion names it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [result for result in results if isinstance(result, Exception)]
    assert not failures, failures
    return results
