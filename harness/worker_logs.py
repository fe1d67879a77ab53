"""What Dramatiq workers print, read back: ready workers, step results, dropped duplicates."""

from __future__ import annotations

import re
from collections import Counter

from harness.errors import HarnessError
from harness.processes import Process

#: What Dramatiq logs once a forked worker process consumes; it names that process's pid.
WORKER_READY_MARKER = "Worker process is ready for action."
#: What Dramatiq's main process logs once it relays its children's output: a forked process that
#: dies before then (it can consume at once) may die without the main process saying so.
WORKER_MAIN_READY_MARKER = "is booting up."
#: What Dramatiq's Redis consumer logs when a message id it fetched has no data any more:
#: another copy of the same message id was acknowledged first (a duplicate delivery dropped).
DROPPED_DUPLICATE_MARKER = "Found 'None' message in message cache"
#: The line jobs.actors logs (at DEBUG, `dramatiq -v`) when a step returns: actor, exchange id, result.
STEP_RESULT = re.compile(r"\[jobs\.actors\] \[DEBUG\] (\w+) ([0-9a-f-]{36}): (\w+)$", re.MULTILINE)


def worker_process_pid(worker: Process) -> int:
    """The pid of the process Dramatiq forked to run the actors (the one a failpoint stops)."""
    for line in worker.output().splitlines():
        if WORKER_READY_MARKER in line and "[PID " in line:
            return int(line.split("[PID ", 1)[1].split("]", 1)[0])
    raise HarnessError(f"no ready worker process in {worker.describe()}")


def step_deliveries(*workers: Process) -> Counter[tuple[str, str, str]]:
    """(actor, exchange id, result) of every delivery the workers' DEBUG lines report."""
    return Counter((m.group(1), m.group(2), m.group(3)) for w in workers for m in STEP_RESULT.finditer(w.output()))


def step_results(*workers: Process) -> Counter[str]:
    """How the steps' deliveries ended, from the workers' DEBUG lines: advanced, skipped, ..."""
    results: Counter[str] = Counter()
    for (_, _, result), n in step_deliveries(*workers).items():
        results[result] += n
    return results


def dropped_duplicates(*workers: Process) -> int:
    return sum(worker.output().count(DROPPED_DUPLICATE_MARKER) for worker in workers)
