"""Real processes: start, kill -9, SIGTERM, restart, and what each one printed.

Every process runs in a process group of its own, so a kill reaches the command and
everything it forked (Dramatiq's worker processes, gunicorn's workers) and nothing else.
Its output goes to a file, so a failure can show what the process said.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, ProcessExited, WaitTimeout
from harness.waits import wait_until

#: The project root: every command runs from here, so `--app app` and `-m bank` resolve.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The virtualenv's scripts (flask, gunicorn, dramatiq), beside the running interpreter.
BIN = Path(sys.executable).parent
#: Seconds a started process gets to print its ready marker.
START_TIMEOUT_SECONDS = 60.0
#: Seconds a process gets to exit after SIGTERM before its process group is killed.
STOP_TIMEOUT_SECONDS = 10.0
#: Lines of a process's output shown in a failure message.
OUTPUT_TAIL_LINES = 40
#: Variables of the caller's shell that could redirect a child or inject faults by accident.
SCRUBBED_ENV = ("FX_FAILPOINTS", "REDIS_URL", "BROKER_URL", "SENTRY_DSN", "BANK_URL", "QUEUE_NAME", "FLASK_APP",
                "FX_RATES", "DATABASE_URL", "PGAPPNAME", "WEB_CONCURRENCY", "CREDIT_MAX_ATTEMPTS",
                "RELAY_BATCH_SIZE", "RELAY_COALESCE_MS", "RELAY_METRICS_PORT")


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def shown(command: Sequence[str]) -> str:
    """A command as a shell would print it, with paths inside the project made relative."""
    root = str(PROJECT_ROOT)
    return shlex.join(str(Path(c).relative_to(root)) if c.startswith(root + "/") else c for c in command)


def clean_environment() -> dict[str, str]:
    """This process's environment without SCRUBBED_ENV or Dramatiq's own variables, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV and not k.startswith("dramatiq_")}
    env["PYTHONUNBUFFERED"] = "1"  # so a killed process's last lines are in its log
    return env


@dataclass
class Process:
    """One command in its own process group, its output appended to `log_path`; restartable."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    role: str = ""
    #: What the command prints once it is ready (once per start).
    ready_marker: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    #: Exits nobody asked for (a crash), with the return code.
    crashes: list[int] = field(default_factory=list)
    #: The current run's exit was asked for (kill, stop) or already counted as a crash.
    settled: bool = False
    terminated: bool = False

    def start(self) -> Process:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}: {shown(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.settled = self.terminated = False
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HarnessError(f"{self.name} was never started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self, lines: int = OUTPUT_TAIL_LINES) -> str:
        """State, the first error lines and the last `lines` of output: what a failure message needs."""
        state = "not started" if self.process is None else (
            "running" if self.is_running() else f"exited with {self.returncode}")
        pid = f"pid {self.process.pid}, " if self.process is not None else ""
        text = self.output()
        problems = [line for line in text.splitlines()
                    if "[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line]
        summary = f"{self.name} ({pid}{state}); {len(problems)} error lines"
        if problems:
            summary += "; the first:\n  " + "\n  ".join(problems[:10])
        return f"{summary}\nlast {lines} lines of its output:\n{tail(text, lines)}"

    def wait_for_output(self, marker: str, count: int = 1, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until `marker` has appeared `count` times in the output; fails at once if the process exits."""

        def seen() -> bool:
            if self.output().count(marker) >= count:
                return True
            if not self.is_running():
                raise ProcessExited(f"{self.name} exited before printing {marker!r}: {self.describe()}")
            return False

        wait_until(seen, timeout, lambda: f"{marker!r} from {self.describe()}", interval=0.1)

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until this start's ready marker is printed (each start prints it once more)."""
        if self.ready_marker is not None:
            self.wait_for_output(self.ready_marker, self.starts, timeout)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout) if self.process is not None else 0
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {self.describe()}") from None

    def kill(self) -> None:
        """kill -9 of the whole group: the command and every process it forked; `start()` again later."""
        if self.process is None or self.settled:
            return
        self.kills += 1
        self._kill_group()
        self.settled = True  # not a crash: `check_crashed` leaves it alone

    def terminate(self) -> None:
        """SIGTERM once: Dramatiq takes a second SIGTERM as an order to kill its workers at once."""
        if self.is_running() and not self.terminated:
            self.terminated = True
            self.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM, then after `timeout` SIGKILL to the whole group; the return code."""
        if self.process is None:
            return None
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        self._kill_group()  # whatever it forked and left behind
        self.settled = True
        return self.process.returncode

    def check_crashed(self) -> int | None:
        """The return code if the process ended on its own since the last look (then forgotten)."""
        if self.process is None or self.settled or self.process.poll() is None:
            return None
        self.settled = True
        self.crashes.append(self.process.returncode)
        return self.process.returncode

    def _kill_group(self) -> None:
        assert self.process is not None
        # The group is ours (start_new_session): it holds only this process and its children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class ProcessGroup:
    """The processes of one test or benchmark run, their logs in `log_dir`; `stop_all()` ends every one."""

    log_dir: Path
    processes: list[Process] = field(default_factory=list)
    #: Every command started, as a shell would print it (a report lists them).
    commands: list[str] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str], *, role: str = "",
              ready_marker: str | None = None) -> Process:
        process = Process(name, tuple(command), dict(env), self.log_dir / f"{name}.log", role or name, ready_marker)
        self.processes.append(process)
        self.commands.append(shown(command))
        return process.start()

    def by_role(self, *roles: str) -> list[Process]:
        return [p for p in self.processes if p.role in roles]

    def supervise(self) -> list[str]:
        """Restart any process that exited on its own; says which (a crash is a finding)."""
        notes = []
        for process in self.processes:
            code = process.check_crashed()
            if code is not None:
                notes.append(f"{process.name} exited on its own with {code}; restarted:\n{tail(process.output(), 30)}")
                process.start()
        return notes

    def stop_all(self, processes: Iterable[Process] | None = None) -> None:
        """SIGTERM to all at once (each takes a few seconds to exit), then stop each."""
        chosen = list(self.processes if processes is None else processes)
        for process in chosen:
            process.terminate()
        for process in chosen:
            process.stop()

    def describe(self, processes: Iterable[Process] | None = None) -> str:
        return "\n\n".join(p.describe() for p in (self.processes if processes is None else processes))
