"""Real processes for fault tests: relay subprocesses, a private redis-server, bounded waits.

Every process started here writes its output to a file, so a failing test can show what
the process said; every wait has a deadline and says what it was waiting for.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

#: The project root: the relay subprocess runs from here so `--app app` resolves.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RELAY_COMMAND = (sys.executable, "-m", "flask", "--app", "app", "relay", "run")
#: What `Relay.run()` logs once its loop begins.
RELAY_STARTED_MARKER = " started (batch "
#: Lines of a process's output shown in a failure message.
OUTPUT_TAIL_LINES = 60
#: Ports for private servers: below 32768, where outgoing connections never take them.
PRIVATE_PORT_RANGE = (20_000, 32_000)

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out before its condition held."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Raises WaitTimeout naming `what` (a string, or a callable evaluated at the deadline so
    the message can show the state that was reached) if `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RelayProcess:
    """A `flask relay run` subprocess whose output goes to `log_path`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def is_running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self) -> str:
        state = "running" if self.is_running() else f"exited with {self.returncode}"
        return f"relay {self.name} (pid {self.pid}, {state}); its output:\n{tail(self.output())}"

    def wait_started(self, timeout: float = 30.0) -> None:
        """Wait for the relay loop to begin; fail with its output if it exits instead."""

        def started() -> bool:
            if RELAY_STARTED_MARKER in self.output():
                return True
            if not self.is_running():
                raise AssertionError(f"the relay exited before starting: {self.describe()}")
            return False

        wait_until(started, timeout, what=lambda: f"the relay to start: {self.describe()}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {self.describe()}") from None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (the relay finishes its batch and exits 0), then SIGKILL after `timeout`."""
        if self.is_running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def published_total(self) -> int | None:
        """The total the relay logged as it stopped, if it stopped gracefully."""
        for line in reversed(self.output().splitlines()):
            if " stopped after publishing " in line:
                return int(line.rsplit(" stopped after publishing ", 1)[1].split()[0])
        return None


def relay_environment(
    *,
    database_url: str,
    broker_url: str,
    failpoints: str | None = None,
    batch_size: int | None = None,
    poll_interval_seconds: float = 0.2,
    max_backoff_seconds: float = 1.0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    # Nothing from the developer's shell may redirect the relay or inject faults by accident.
    for name in ("FX_FAILPOINTS", "REDIS_URL", "SENTRY_DSN", "RELAY_BATCH_SIZE", "RELAY_COALESCE_MS",
                 "RELAY_METRICS_PORT", "FLASK_APP"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL=broker_url,
        LOG_LEVEL="INFO",
        RELAY_POLL_INTERVAL_SECONDS=str(poll_interval_seconds),
        RELAY_MAX_BACKOFF_SECONDS=str(max_backoff_seconds),
        PYTHONUNBUFFERED="1",
    )
    if failpoints:
        env["FX_FAILPOINTS"] = failpoints
    if batch_size is not None:
        env["RELAY_BATCH_SIZE"] = str(batch_size)
    env.update(extra or {})
    return env


def relay_application_name(name: str) -> str:
    return f"fx-test-relay-{name}"


def start_relay(name: str, log_dir: Path, **environment: object) -> RelayProcess:
    """Start `flask --app app relay run` with `relay_environment(**environment)`.

    Its PostgreSQL connections carry `relay_application_name(name)`, so a test can find
    them in pg_stat_activity.
    """
    log_path = log_dir / f"relay-{name}.log"
    env = relay_environment(**environment)  # type: ignore[arg-type]
    env["PGAPPNAME"] = relay_application_name(name)  # libpq names every connection it opens
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            RELAY_COMMAND,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return RelayProcess(name, process, log_path)


@dataclass
class RelayGroup:
    """Relays started by one test; `stop_all()` ends every one still running."""

    log_dir: Path
    database_url: str
    relays: list[RelayProcess] = field(default_factory=list)

    def start(self, name: str, *, broker_url: str, **environment: object) -> RelayProcess:
        relay = start_relay(name, self.log_dir, database_url=self.database_url, broker_url=broker_url, **environment)
        self.relays.append(relay)
        return relay

    def stop_all(self) -> None:
        for relay in self.relays:
            relay.stop()

    def describe(self, relays: Iterable[RelayProcess] | None = None) -> str:
        return "\n\n".join(relay.describe() for relay in (self.relays if relays is None else relays))


def free_private_port() -> int:
    """A free TCP port on 127.0.0.1 below 32768 (see PRIVATE_PORT_RANGE)."""
    for _ in range(200):
        port = random.randint(*PRIVATE_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PRIVATE_PORT_RANGE}")


@dataclass
class RedisServer:
    """A private redis-server of one test: its own port and data directory.

    Started in the foreground as our child, so the test can kill exactly this process and
    start it again on the same directory; never the shared server.
    """

    port: int
    data_dir: Path
    arguments: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        assert not self.is_running(), "this redis-server is already running"
        self.starts += 1
        self.process = subprocess.Popen(
            ("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--logfile", str(self.log_path), "--daemonize", "no", *self.arguments),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers_ping, timeout, what=lambda: f"redis-server on port {self.port}: {self.describe()}")

    def _answers_ping(self) -> bool:
        if not self.is_running():
            raise AssertionError(f"redis-server exited: {self.describe()}")
        result = subprocess.run(
            ("redis-cli", "-p", str(self.port), "ping"), capture_output=True, text=True, timeout=5, check=False
        )
        return result.stdout.strip() == "PONG"

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what appendfsync already wrote survives."""
        if self.process is not None and self.is_running():
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)

    def shutdown(self, timeout: float = 30.0) -> None:
        """`redis-cli shutdown`: the server flushes its append-only file and exits."""
        subprocess.run(("redis-cli", "-p", str(self.port), "shutdown"), capture_output=True, timeout=10, check=False)
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def describe(self) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return f"redis-server port {self.port}, dir {self.data_dir}; its log:\n{tail(log, 30)}"


def start_private_redis(data_dir: Path, *arguments: str, port: int | None = None) -> RedisServer:
    """Start a redis-server of the caller's own (see RedisServer); the caller must kill() it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise FileNotFoundError("redis-server and redis-cli must be installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(port or free_private_port(), data_dir, arguments)
    server.start()
    return server
