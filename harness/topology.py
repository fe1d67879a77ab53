"""The whole system as separate processes: bank, gunicorn, relays, Dramatiq workers, reconciler.

A `Topology` runs the processes of one test or benchmark against the database and broker
it is given (`harness.provision` makes both for a benchmark), records every command it
started, and at `stop_all()` ends every process; `describe()` says what each one printed.
Tests that watch the relay closely run it in their own process instead (`start_relay_thread`).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests
from sqlalchemy import Engine

import bootstrap
from bank.client import BankClient
from harness import queues
from harness.designs import (
    OUTBOX,
    RELAY_MAX_BACKOFF_SECONDS,
    RELAY_POLL_INTERVAL_SECONDS,
    TEST_ENV,
    TEST_LAYOUT,
    Design,
    Layout,
)
from harness.errors import ProcessExited
from harness.net import free_private_port
from harness.processes import BIN, START_TIMEOUT_SECONDS, Process, ProcessGroup, clean_environment
from harness.relay_thread import RelayThread
from harness.waits import wait_until
from harness.worker_logs import WORKER_MAIN_READY_MARKER, WORKER_READY_MARKER
from outbox.publisher import Publisher
from settings import Settings

#: The queue the exchanges' steps go to, unless a test names one of its own.
QUEUE = "exchanges"
#: The harness's own PostgreSQL connections carry this name, so fault injection spares them.
HARNESS_APPLICATION_NAME = "fx-harness"
#: What each command prints once it is ready.
RELAY_STARTED_MARKER = " started (batch "
WEB_READY_MARKER = "Booting worker"
RECONCILER_READY_MARKER = "reconciler started"
RELAY_STOPPED_MARKER = " stopped after publishing "
#: Every role, in the order `start_all` starts them.
ROLES = ("bank", "web", "relay", "worker", "reconciler")
def application_name(process: Process) -> str:
    """The name the process's PostgreSQL connections carry (libpq reads PGAPPNAME)."""
    return f"fx-{process.name}"


def published_total(relay: Process) -> int | None:
    """The total a relay logged as it stopped, if it stopped gracefully."""
    for line in reversed(relay.output().splitlines()):
        if RELAY_STOPPED_MARKER in line:
            return int(line.rsplit(RELAY_STOPPED_MARKER, 1)[1].split()[0])
    return None


class Topology:
    """The processes of one run against one database and broker; `stop_all()` ends them."""

    def __init__(self, *, log_dir: Path, engine: Engine, database_url: str, broker_url: str = "",
                 queue: str = QUEUE, env: Mapping[str, str] = TEST_ENV, design: Design = OUTBOX,
                 layout: Layout = TEST_LAYOUT, bank_seed: int = 1) -> None:
        self.log_dir = log_dir
        self.engine = engine
        self.database_url = database_url
        self.broker_url = broker_url
        self.queue = queue
        self.settings_env = dict(env)
        self.design = design
        self.layout = layout
        self.bank_seed = bank_seed
        self.processes = ProcessGroup(log_dir)
        self.bank_url = ""
        self.web_port = free_private_port()
        self.relay: RelayThread | None = None

    @property
    def commands(self) -> list[str]:
        return self.processes.commands

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, name: str, *, failpoints: str | None = None, extra: Mapping[str, str] | None = None,
            broker_url: str | None = None) -> dict[str, str]:
        """A child's environment: nothing inherited that could redirect it, this run's servers, the settings."""
        env = clean_environment()
        env.update(DATABASE_URL=self.database_url, BROKER_URL=broker_url or self.broker_url, QUEUE_NAME=self.queue,
                   LOG_LEVEL="INFO", PGAPPNAME=f"fx-{name}")
        if self.bank_url:
            env["BANK_URL"] = self.bank_url
        env.update(self.settings_env)
        if failpoints:
            env["FX_FAILPOINTS"] = failpoints
        env.update(extra or {})
        return env

    def _start(self, name: str, role: str, command: Sequence[str], env: Mapping[str, str],
               ready_marker: str | None, wait: bool) -> Process:
        process = self.processes.start(name, command, env, role=role, ready_marker=ready_marker)
        if wait:
            process.wait_ready()
        return process

    # The processes ------------------------------------------------------------------------

    def start_bank(self, seed: int | None = None, *, wait: bool = True) -> BankClient:
        port = free_private_port()
        self.bank_url = f"http://127.0.0.1:{port}"
        command = (sys.executable, "-m", "bank", "--port", str(port), "--db", str(self.log_dir / "bank.db"),
                   "--seed", str(self.bank_seed if seed is None else seed))
        self._start("bank", "bank", command, self.env("bank"), None, wait=False)
        if wait:
            self.wait_bank()
        return self.bank_client()

    def wait_bank(self) -> None:
        bank = self.processes.by_role("bank")[-1]

        def healthy() -> bool:
            if not bank.is_running():
                raise ProcessExited(f"the bank exited: {bank.describe()}")
            try:
                return requests.get(self.bank_url + "/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, START_TIMEOUT_SECONDS, "the bank to answer /health", interval=0.1)

    def bank_client(self, read_timeout: float = 10.0) -> BankClient:
        return BankClient(self.bank_url, connect_timeout=2, read_timeout=read_timeout)

    def start_web(self, *, wait: bool = True, failpoints: str | None = None) -> Process:
        layout = self.layout
        command = (str(BIN / "gunicorn"), "-w", str(layout.web_workers), "--threads", str(layout.web_threads),
                   "--bind", f"127.0.0.1:{self.web_port}", self.design.web_app)
        web = self._start("web", "web", command, self.env("web", failpoints=failpoints), WEB_READY_MARKER, wait)
        if wait:
            self.wait_web()
        return web

    def wait_web(self) -> None:
        def answers() -> bool:
            try:
                return requests.get(f"{self.web_url}/api/exchanges/{uuid.uuid4()}", timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_until(answers, START_TIMEOUT_SECONDS, lambda: f"gunicorn:\n{self.processes.describe(self.by_role('web'))}",
                   interval=0.1)

    def start_worker(self, name: str, *, threads: int | None = None, failpoints: str | None = None,
                     verbose: bool = False, extra: Mapping[str, str] | None = None, wait: bool = True) -> Process:
        assert self.bank_url, "start the bank first"
        env = self.env(f"worker-{name}", failpoints=failpoints, extra=extra)
        Settings.from_env(env)  # a bad setting fails here, not silently in the worker
        command = [str(BIN / "dramatiq"), self.design.worker_module, "--processes", "1", "--threads",
                   str(threads or self.layout.worker_threads),
                   "--worker-shutdown-timeout", str(self.layout.worker_shutdown_timeout_ms)]
        if verbose:
            command.append("--verbose")
        worker = self._start(f"worker-{name}", "worker", command, env, WORKER_READY_MARKER, wait)
        if wait:
            worker.wait_for_output(WORKER_MAIN_READY_MARKER, worker.starts)
        return worker

    def start_relay(self, name: str, *, broker_url: str | None = None, batch_size: int | None = None,
                    failpoints: str | None = None, extra: Mapping[str, str] | None = None,
                    wait: bool = False) -> Process:
        """`flask --app app relay run` as a process (not waited for unless `wait`: a failpoint may stop it)."""
        batch = {} if batch_size is None else {"RELAY_BATCH_SIZE": str(batch_size)}
        env = self.env(f"relay-{name}", failpoints=failpoints, extra={**batch, **(extra or {})},
                       broker_url=broker_url)
        command = (str(BIN / "flask"), "--app", "app", "relay", "run")
        return self._start(f"relay-{name}", "relay", command, env, RELAY_STARTED_MARKER, wait)

    def start_reconciler(self, *, wait: bool = True) -> Process:
        command = (str(BIN / "flask"), "--app", "app", "reconcile", "run")
        return self._start("reconciler", "reconciler", command, self.env("reconciler"), RECONCILER_READY_MARKER,
                           wait)

    def start_all(self, roles: Sequence[str] = ROLES) -> None:
        """Start the processes of `roles` (as the layout and design say) not started yet; returns
        once each says it is ready. They start together and are waited for together."""
        started = {p.role for p in self.processes.processes}
        wanted = [r for r in roles if r not in started]
        layout, design = self.layout, self.design
        if "bank" in wanted:
            self.start_bank(wait=False)
        if "web" in wanted:
            self.start_web(wait=False)
        if "relay" in wanted and design.relays:
            for i in range(layout.relays):
                self.start_relay(str(i))
        if "worker" in wanted:
            for i in range(layout.workers):
                self.start_worker(str(i), wait=False)
        if "reconciler" in wanted and design.relays and layout.reconciler:
            self.start_reconciler(wait=False)
        if "bank" in wanted:
            self.wait_bank()
        for process in self.processes.processes:
            process.wait_ready()
        if "web" in wanted:
            self.wait_web()

    def start_relay_thread(self, wrap: Callable[[Publisher], Publisher] | None = None) -> RelayThread:
        """The relay in this process, its publisher wrapped by `wrap` if given."""
        settings = Settings(database_url=self.database_url, broker_url=self.broker_url,
                            relay_poll_interval_seconds=RELAY_POLL_INTERVAL_SECONDS,
                            relay_max_backoff_seconds=RELAY_MAX_BACKOFF_SECONDS)
        relay = bootstrap.build_relay(settings, self.engine)
        if wrap is not None:
            relay.publisher = wrap(relay.publisher)
        self.relay = RelayThread(relay).start()
        return self.relay

    # Watching and ending them --------------------------------------------------------------

    def by_role(self, *roles: str) -> list[Process]:
        return self.processes.by_role(*roles)

    def supervise(self) -> list[str]:
        return self.processes.supervise()

    def queued(self) -> int:
        """Messages of this run's queue waiting in the broker, ready or delayed (in flight ones not counted)."""
        return queues.queued(self.broker_url, self.queue)

    def stop_all(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        self.processes.stop_all()

    def describe(self) -> str:
        parts = [self.relay.describe()] if self.relay else []
        if self.processes.processes:
            parts.append(self.processes.describe())
        return "\n\n".join(parts)
