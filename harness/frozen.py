"""Processes that freeze and come back: SIGSTOP, the kernel's view of it, SIGCONT.

A failpoint with the action `stop` makes a worker or relay SIGSTOP itself at a chosen
place. `Frozen` waits until the kernel reports it stopped, wakes it when told to, and
wakes every one it watched before teardown kills anything: a stopped process ignores
SIGTERM, and would outlive its test.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ProcessExited
from harness.waits import wait_until

#: /proc/<pid>/stat's state letter for a process stopped by a signal (SIGSTOP).
STOPPED = "T"
#: Seconds a woken process gets to leave the stopped state.
RESUME_TIMEOUT_SECONDS = 10.0


def process_state(pid: int) -> str | None:
    """The kernel's state letter for `pid` (R, S, T, Z, ...), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (in parentheses) may hold spaces: the state follows its last ")".
    return stat.rsplit(")", 1)[1].split()[0]


@dataclass
class Frozen:
    """Processes that may SIGSTOP themselves: waited for, woken, and all woken at teardown."""

    pids: set[int] = field(default_factory=set)

    def watch(self, pid: int) -> int:
        self.pids.add(pid)
        return pid

    def wait_stopped(self, pid: int, timeout: float, describe: Callable[[], str]) -> None:
        self.watch(pid)

        def stopped() -> bool:
            state = process_state(pid)
            if state is None:
                raise ProcessExited(f"pid {pid} exited instead of stopping: {describe()}")
            return state == STOPPED

        wait_until(stopped, timeout, lambda: f"pid {pid} to stop (state {process_state(pid)}): {describe()}")

    def resume(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        wait_until(lambda: process_state(pid) != STOPPED, RESUME_TIMEOUT_SECONDS,
                   f"pid {pid} to resume after SIGCONT")

    def resume_all(self) -> None:
        """SIGCONT every watched process still alive."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
