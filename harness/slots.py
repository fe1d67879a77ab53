"""Which of the parallel test workers this process is, so that workers share nothing by accident.

pytest-xdist names its workers gw0, gw1, ... (PYTEST_XDIST_WORKER) and says how many there are
(PYTEST_XDIST_WORKER_COUNT); child processes inherit both, so a process a test starts lands in
its test's slot. A run without xdist, and every bench, is slot 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    name: str
    index: int
    count: int


def current_slot() -> Slot:
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw") or not name[2:].isdigit():
        return Slot("main", 0, 1)
    index = int(name[2:])
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    return Slot(name, index, max(count, index + 1))
