"""The whole system as separate processes, for the chaos run and the end-to-end benchmark.

A `Topology` owns a PostgreSQL database of its own (created, migrated with the release
command, dropped at the end), a private redis-server (its own port below 32768 and its
own directory, append-only with fsync every second), the bank service, gunicorn, relays,
Dramatiq workers and the reconciler. Every command it runs is recorded so a report can
print it. Nothing here touches the shared Redis or any other database.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import redis
import requests
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from bank.client import BankClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: Ports of private servers: below 32768, where outgoing connections never take them.
PRIVATE_PORT_RANGE = (20_000, 32_000)
#: The harness's own PostgreSQL connections carry this name, so fault injection spares them.
HARNESS_APPLICATION_NAME = "fx-bench-harness"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
QUEUE = "exchanges"

#: The short, test-like timings of the issue: a killed worker's messages come back in about
#: 5 s, a stuck exchange is re-sent after 10 s, a bank call gives up after 1.5 s.
FAST_ENV: dict[str, str] = {
    "STEP_LEASE_SECONDS": "5",
    "BANK_READ_TIMEOUT_SECONDS": "1",
    "BANK_CONNECT_TIMEOUT_SECONDS": "0.5",
    "STEP_MIN_BACKOFF_MS": "100",
    "STEP_MAX_BACKOFF_MS": "2000",
    "CREDIT_MAX_ATTEMPTS": "8",
    "BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
    "BROKER_MAINTENANCE_CHANCE": "1000000",
    "dramatiq_worker_timeout": "100",
    "STUCK_AFTER_SECONDS": "10",
    "RECONCILE_INTERVAL_SECONDS": "2",
    "RELAY_MAX_BACKOFF_SECONDS": "2",
    # The API's per-key rate limit (if the application has one) must not be what is measured.
    "API_RATE_LIMIT": "1000000 per minute",
}
#: Variables of the caller's shell that could redirect a child or inject faults by accident.
SCRUBBED_ENV = ("FX_FAILPOINTS", "REDIS_URL", "BROKER_URL", "SENTRY_DSN", "BANK_URL", "QUEUE_NAME", "FLASK_APP",
                "FX_RATES", "DATABASE_URL", "PGAPPNAME", "WEB_CONCURRENCY")

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The harness could not set the system up or gave up waiting (not an invariant failure)."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str],
               interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"gave up after {timeout:.0f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def free_private_port() -> int:
    for _ in range(200):
        port = random.randint(*PRIVATE_PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free port in {PRIVATE_PORT_RANGE}")


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def shown(command: Sequence[str]) -> str:
    """A command as a shell would print it, with the project's virtualenv relative."""
    parts = [str(Path(c).relative_to(PROJECT_ROOT)) if c.startswith(str(PROJECT_ROOT)) else c for c in command]
    return shlex.join(parts)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Service:
    """One supervised command in its own process group; `kill()` is kill -9 of the group."""

    name: str
    role: str
    command: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    ready_marker: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    #: Exits nobody asked for (a crash), with the return code.
    crashes: list[int] = field(default_factory=list)

    def start(self) -> Service:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}: {shown(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        if self.ready_marker is None:
            return
        marker, count = self.ready_marker, self.starts

        def ready() -> bool:
            if not self.is_running():
                raise HarnessError(f"{self.name} exited while starting:\n{tail(self.log_path)}")
            return self.output().count(marker) >= count

        wait_until(ready, timeout, lambda: f"{self.name} to print {marker!r}:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """kill -9 of the whole group: the command and every process it forked; `start()` again later."""
        if self.process is None:
            return
        self.kills += 1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None  # not a crash: `check_crashed` and `stop` leave it alone

    def check_crashed(self) -> int | None:
        """The return code if the process ended on its own since the last look (then forgotten)."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.crashes.append(code)
        self.process = None
        return code

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class PrivateRedis:
    """A redis-server of our own, in the foreground as our child, so kill -9 hits exactly it."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: Persistence: the append-only file, fsynced every second (at most ~1 s lost on kill -9).
    ARGUMENTS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def command(self) -> tuple[str, ...]:
        return ("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no", *self.ARGUMENTS)

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)

        def pong() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise HarnessError(f"redis-server exited:\n{tail(self.data_dir / 'redis.log')}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(pong, timeout, f"redis-server on port {self.port} (it may still be loading its AOF)")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def queued(self, queue: str) -> int:
        """Messages waiting in the queue or its delay queue (in-flight ones not counted)."""
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)
        try:
            return sum(int(client.llen(f"dramatiq:{q}")) for q in (queue, f"{queue}.DQ"))
        except redis.RedisError:
            return -1
        finally:
            client.close()


# --- the topology ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """What runs as web and worker, and whether the outbox's relays and reconciler exist."""

    name: str
    web_app: str
    worker_module: str
    relays: bool


OUTBOX = Design("outbox", "app:app", "jobs.worker", relays=True)
NAIVE = Design("naive", "bench.naive:app", "bench.naive", relays=False)
DESIGNS = {d.name: d for d in (OUTBOX, NAIVE)}


@dataclass
class Layout:
    relays: int = 2
    workers: int = 2
    worker_threads: int = 4
    web_workers: int = 2
    web_threads: int = 4
    reconciler: bool = True


class Topology:
    """Set up with `with Topology(...) as topo:`; everything is stopped and removed on exit."""

    def __init__(self, design: Design, layout: Layout, *, env: Mapping[str, str], bank_seed: int = 1,
                 keep_logs: bool = False, label: str = "bench", admin_url: str = POSTGRES_ADMIN_URL) -> None:
        self.design = design
        self.layout = layout
        self.extra_env = dict(env)
        self.bank_seed = bank_seed
        self.keep_logs = keep_logs
        self.label = label
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"fx-{label}-{design.name}-"))
        self.database = f"fx_{label}_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.database_url = make_url(admin_url).set(database=self.database).render_as_string(hide_password=False)
        self.redis = PrivateRedis(free_private_port(), self.work_dir / "redis")
        self.bank_port = free_private_port()
        self.web_port = free_private_port()
        self.services: list[Service] = []
        self.commands: list[str] = []
        self.engine: Engine | None = None
        self.failed = False

    # set-up and tear-down ---------------------------------------------------------------

    def __enter__(self) -> Topology:
        try:
            self._create_database()
            self.redis.data_dir.mkdir(parents=True)
            self.redis.start()
            self.commands.append(shown(self.redis.command))
            self.run_cli("db-upgrade")
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for service in self.services:
            if service.is_running():
                service.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for service in self.services:
            service.stop()
        self.redis.kill()
        if self.engine is not None:
            self.engine.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.admin.dispose()
        if exc_type is None and not self.failed and not self.keep_logs:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _create_database(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.database}"'))
        self.commands.append(f'psql -c \'CREATE DATABASE "{self.database}"\'  (dropped WITH (FORCE) at the end)')
        self.engine = create_engine(self.database_url, pool_size=4, max_overflow=4, pool_pre_ping=True,
                                    connect_args={"application_name": HARNESS_APPLICATION_NAME})

    def env(self, role: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV and not k.startswith("dramatiq_")}
        env.update(
            DATABASE_URL=self.database_url, BROKER_URL=self.redis.url, BANK_URL=f"http://127.0.0.1:{self.bank_port}",
            QUEUE_NAME=QUEUE, LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", PGAPPNAME=f"fx-{role}",
        )
        env.update(self.extra_env)
        return env

    def run_cli(self, *arguments: str) -> str:
        command = (str(BIN / "flask"), "--app", "app", *arguments)
        self.commands.append(shown(command))
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=self.env("cli"), capture_output=True, text=True,
                                timeout=120, check=False)
        if result.returncode != 0:
            raise HarnessError(f"{shown(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout.strip()

    def open_accounts(self, count: int, funding: Mapping[str, str], parallel: int = 4) -> list[str]:
        """`flask open-account` per account, a few at a time; returns the account ids."""
        fund = [f"--fund={currency}:{amount}" for currency, amount in funding.items()]
        commands = [(str(BIN / "flask"), "--app", "app", "open-account", f"bench-customer-{i}", *fund)
                    for i in range(count)]
        self.commands.append(shown(commands[0]) + f"   (x{count}, bench-customer-0..{count - 1})")
        ids: list[str] = []
        for start in range(0, count, parallel):
            running = [subprocess.Popen(c, cwd=PROJECT_ROOT, env=self.env("cli"), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for c in commands[start:start + parallel]]
            for process in running:
                out, err = process.communicate(timeout=120)
                if process.returncode != 0:
                    raise HarnessError(f"open-account failed: {out}\n{err}")
                ids.append(out.strip().splitlines()[-1])
        return ids

    def api_keys(self, account_ids: Sequence[str]) -> dict[str, str]:
        """A customer API key per account (for the JSON API's `Authorization: Bearer`), if the
        application has API keys; issued in this process, as no command prints one."""
        try:
            from services.credentials import Role, issue_api_key
        except ImportError:
            return {}
        from models import accounts

        assert self.engine is not None
        with self.engine.connect() as conn:
            owners = dict(conn.execute(select(accounts.c.id, accounts.c.customer_id)
                                       .where(accounts.c.id.in_([uuid.UUID(a) for a in account_ids]))).all())
        self.commands.append("services.credentials.issue_api_key(role=customer) per account's customer "
                             "(in the harness)")
        return {a: issue_api_key(self.engine, role=Role.CUSTOMER, label="bench", customer_id=owners[uuid.UUID(a)])
                for a in account_ids}

    # the services -------------------------------------------------------------------------

    def _add(self, name: str, role: str, command: Sequence[str], ready_marker: str | None = None) -> Service:
        service = Service(name, role, tuple(command), self.env(role), self.work_dir / f"{name}.log", ready_marker)
        self.services.append(service)
        self.commands.append(shown(command))
        return service.start()

    def start_all(self, roles: Sequence[str] = ("bank", "web", "relay", "worker", "reconciler")) -> None:
        """Start the services of `roles` not started yet; returns once each says it is ready."""
        layout, design = self.layout, self.design
        started = {s.role for s in self.services}
        wanted = [r for r in roles if r not in started]
        if "bank" in wanted:
            self._add("bank", "bank", (sys.executable, "-m", "bank", "--port", str(self.bank_port),
                                       "--db", str(self.work_dir / "bank.db"), "--seed", str(self.bank_seed)))
        if "web" in wanted:
            self._add("web", "web", (str(BIN / "gunicorn"), "-w", str(layout.web_workers), "--threads",
                                     str(layout.web_threads), "--bind", f"127.0.0.1:{self.web_port}",
                                     design.web_app), ready_marker="Booting worker")
        if "relay" in wanted and design.relays:
            for i in range(layout.relays):
                self._add(f"relay-{i}", "relay", (str(BIN / "flask"), "--app", "app", "relay", "run"),
                          ready_marker=" started (batch ")
        if "worker" in wanted:
            for i in range(layout.workers):
                self._add(f"worker-{i}", "worker",
                          (str(BIN / "dramatiq"), design.worker_module, "--processes", "1", "--threads",
                           str(layout.worker_threads), "--worker-shutdown-timeout", "5000"),
                          ready_marker="Worker process is ready for action.")
        if "reconciler" in wanted and design.relays and layout.reconciler:
            self._add("reconciler", "reconciler", (str(BIN / "flask"), "--app", "app", "reconcile", "run"),
                      ready_marker="reconciler started")
        if "bank" in wanted:
            wait_until(self._bank_healthy, START_TIMEOUT_SECONDS, "the bank to answer /health")
        for service in self.services:
            service.wait_ready()
        if "web" in wanted:
            wait_until(self._web_answers, START_TIMEOUT_SECONDS,
                       lambda: f"gunicorn:\n{tail(self.by_role('web')[0].log_path)}")

    def _bank_healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.bank_port}/health", timeout=1).ok
        except requests.RequestException:
            return False

    def _web_answers(self) -> bool:
        try:
            return requests.get(f"{self.web_url}/api/exchanges/{uuid.uuid4()}", timeout=2).status_code < 500
        except requests.RequestException:
            return False

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def bank(self) -> BankClient:
        return BankClient(f"http://127.0.0.1:{self.bank_port}", connect_timeout=2, read_timeout=30)

    def by_role(self, *roles: str) -> list[Service]:
        return [s for s in self.services if s.role in roles]

    def supervise(self) -> list[str]:
        """Restart any service that exited on its own; says which (a crash is a finding)."""
        notes = []
        for service in self.services:
            code = service.check_crashed()
            if code is not None:
                notes.append(f"{service.name} exited on its own with {code}; restarted:\n{tail(service.log_path)}")
                service.start()
        return notes

    def terminate_backends(self) -> int:
        """pg_terminate_backend of every connection to our database but the harness's own."""
        with self.admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db "
                "AND pid <> pg_backend_pid() AND coalesce(application_name, '') <> :harness"
            ), {"db": self.database, "harness": HARNESS_APPLICATION_NAME}).scalar_one())

    def backend_roles(self) -> dict[int, str]:
        """PostgreSQL backend pid -> role of the process it serves (PGAPPNAME fx-<role>)."""
        with self.admin.connect() as conn:
            rows = conn.execute(text("SELECT pid, application_name FROM pg_stat_activity WHERE datname = :db"),
                                {"db": self.database}).all()
        return {pid: (name or "?").removeprefix("fx-") for pid, name in rows}


# --- CPU accounting -------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds utime + stime) from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        name_end = stat.rfind(")")
        fields = stat[name_end + 2:].split()
        table[int(entry.name)] = (int(fields[1]), stat[stat.find("(") + 1:name_end],
                                  (int(fields[11]) + int(fields[12])) / ticks)
    return table


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds by role: each service's process tree, our PostgreSQL backends, our redis-server, us."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def sample(self) -> dict[int, tuple[str, float]]:
        table = _process_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        roles: dict[int, str] = {}
        for service in self.topology.services:
            stack = [service.pid] if service.is_running() and service.pid else []
            while stack:
                pid = stack.pop()
                roles[pid] = service.role
                stack.extend(children.get(pid, ()))
        if self.topology.redis.process is not None:
            roles[self.topology.redis.process.pid] = "redis"
        roles[os.getpid()] = "harness"
        marker = f" {self.topology.database} "
        backends = self.topology.backend_roles()
        for pid, (_, name, _) in table.items():
            if name == "postgres" and marker in _cmdline(pid):
                client = backends.get(pid, "?")
                # The harness's own backend (waiting, counting) is the client's cost, not the system's.
                roles[pid] = "harness" if client == "bench-harness" else f"postgres ({client})"
        return {pid: (role, table[pid][2]) for pid, role in roles.items() if pid in table}

    @staticmethod
    def spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> Counter[str]:
        """CPU seconds by role between two samples (processes gone by `after` are not counted)."""
        total: Counter[str] = Counter()
        for pid, (role, cpu) in after.items():
            total[role] += cpu - before.get(pid, (role, 0.0))[1]
        return total


@contextlib.contextmanager
def quiet_stop(topology: Topology) -> Iterator[None]:
    """Mark the topology failed (keep its logs) if the block raises."""
    try:
        yield
    except BaseException:
        topology.failed = True
        raise


# --- the load generator ---------------------------------------------------------------------

#: What every customer account starts with, and the currencies exchanges are drawn from.
FUNDING = {"CAD": "1000000", "USD": "1000000", "EUR": "1000000"}
TARGETS = ("USD", "CAD", "EUR", "GBP", "CHF", "AUD", "JPY")
#: Seconds (connect, read) of one POST; a timed-out POST is sent again with the same key.
POST_TIMEOUT_SECONDS = (2.0, 15.0)


@dataclass
class Submission:
    """One exchange the load generator asked for, and what became of the request."""

    index: int
    key: str
    body: dict[str, str]
    exchange_id: str | None = None
    status: int | None = None
    sent_at: float | None = None
    #: time.time() when the 202 arrived.
    accepted_at: float | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202 and self.exchange_id is not None


class LoadGenerator:
    """POSTs exchanges from a pool of threads, each with an Idempotency-Key.

    A POST that gets no answer, a connection error or a 5xx is sent again with the same
    key and body, which the API answers with the first exchange (never a second one).
    """

    def __init__(self, base_url: str, accounts: Sequence[str], *, seed: int, threads: int, run_id: str,
                 api_keys: Mapping[str, str] | None = None, give_up_seconds: float = 180.0) -> None:
        self.url = base_url + "/api/exchanges"
        self.accounts = list(accounts)
        self.api_keys = dict(api_keys or {})
        self.seed = seed
        self.threads = threads
        self.run_id = run_id
        self.give_up_seconds = give_up_seconds
        self._local = threading.local()
        self.retried_posts = 0

    def request_for(self, index: int) -> tuple[str, dict[str, str]]:
        rng = random.Random(self.seed * 1_000_003 + index)
        source = rng.choice(tuple(FUNDING))
        target = rng.choice([c for c in TARGETS if c != source])
        amount = Decimal(rng.randint(100, 10_000)) / 100
        body = {"account": rng.choice(self.accounts), "from_currency": source, "to_currency": target,
                "amount": str(amount)}
        return f"{self.run_id}-{index}", body

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def submit(self, index: int) -> Submission:
        key, body = self.request_for(index)
        sub = Submission(index, key, body, sent_at=time.time())
        headers = {"Idempotency-Key": key}
        if body["account"] in self.api_keys:
            headers["Authorization"] = f"Bearer {self.api_keys[body['account']]}"
        deadline = time.monotonic() + self.give_up_seconds
        while True:
            sub.attempts += 1
            try:
                response = self._session().post(self.url, json=body, headers=headers,
                                                timeout=POST_TIMEOUT_SECONDS)
                sub.status = response.status_code
                if response.status_code < 500:
                    if response.status_code == 202:
                        sub.accepted_at = time.time()
                        sub.exchange_id = response.json()["id"]
                    else:
                        sub.error = response.text[:300]
                    return sub
                sub.error = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as error:
                sub.status, sub.error = None, f"{type(error).__name__}: {error}"[:300]
                self._local.session = None  # a fresh connection next time
            if time.monotonic() >= deadline:
                return sub
            self.retried_posts += 1
            time.sleep(min(2.0, 0.05 * 2 ** min(sub.attempts, 6)) * random.uniform(0.5, 1.0))

    def run(self, count: int, *, rate: float | None = None, start: int = 0) -> list[Submission]:
        """Submit `count` exchanges, flat out (the pool bounds concurrency) or at `rate` per second."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="load") as pool:
            began = time.monotonic()
            futures = []
            for n, index in enumerate(range(start, start + count)):
                if rate:
                    delay = began + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                futures.append(pool.submit(self.submit, index))
            return [f.result() for f in futures]
