"""The whole system across hosts: every role in a network namespace of its own, as harness.netns builds them.

    ctl (the harness and its load)   postgres   pgbouncer   mq1 mq2 mq3   bank
    web1 web2   relay1 relay2   worker1 worker2   reconciler

PostgreSQL and a 3-node RabbitMQ cluster (quorum queues) of the run's own; web, workers and
the reconciler reach PostgreSQL through PgBouncer in transaction pooling, the relays LISTEN
on a direct connection; every client is given all three broker nodes. `ClusterTopology` is a
harness.topology.Topology (the chaos run's waits and measures read it the same way) whose
processes run on their hosts. The code must run on `ctl` (`bench/cluster` re-executes itself there).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests
from sqlalchemy import create_engine

from bank.client import BankClient
from harness.cluster_servers import PgBouncerHost, PostgresHost
from harness.designs import OUTBOX, Layout
from harness.netns import Network
from harness.processes import BIN, Process
from harness.rabbit_cluster import RabbitCluster
from harness.topology import HARNESS_APPLICATION_NAME, QUEUE, WEB_READY_MARKER, Topology
from harness.waits import wait_until
from harness.worker_logs import WORKER_READY_MARKER

BROKERS = ("mq1", "mq2", "mq3")
WEBS = ("web1", "web2")
RELAYS = ("relay1", "relay2")
WORKERS = ("worker1", "worker2")
HOSTS = ("ctl", "postgres", "pgbouncer", *BROKERS, "bank", *WEBS, *RELAYS, *WORKERS, "reconciler")
WEB_PORT = 8000
BANK_PORT = 8100
#: Settings every process of the cluster runs with, beside the benchmark's short timings.
CLUSTER_ENV = {
    "DB_TRANSACTION_POOLER": "1",
    # A partitioned connection fails within seconds instead of waiting out TCP's retries.
    "DB_TCP_USER_TIMEOUT_MS": "4000",
    "DB_CONNECT_TIMEOUT_SECONDS": "3",
    "BROKER_QUEUE_TYPE": "quorum",
}


class ClusterTopology(Topology):
    def __init__(self, network: Network, *, log_dir: Path, env: Mapping[str, str], layout: Layout,
                 bank_seed: int, failpoints: Mapping[str, str]) -> None:
        self.network = network
        self.database_name = "fx"
        super().__init__(log_dir=log_dir, engine=None, database_url="", env={**env, **CLUSTER_ENV},  # type: ignore[arg-type]
                         design=OUTBOX, layout=layout, bank_seed=bank_seed)
        self.postgres = PostgresHost(network, "postgres", log_dir, self.processes)
        self.pgbouncer = PgBouncerHost(network, "pgbouncer", self.postgres, log_dir, self.processes)
        self.brokers = RabbitCluster(network, BROKERS, log_dir / "rabbitmq", self.processes)
        self.broker_url = ";".join(self.brokers.url(h) for h in BROKERS)
        self.failpoints = dict(failpoints)
        self.direct_url = ""

    # Servers -----------------------------------------------------------------------------------

    def start_servers(self) -> None:
        self.postgres.init()
        self.postgres.start()
        self.direct_url = self.postgres.create_database(self.database_name)
        self.engine = create_engine(self.direct_url, pool_size=4, max_overflow=4, pool_pre_ping=True,
                                    connect_args={"application_name": HARNESS_APPLICATION_NAME})
        self.pgbouncer.start()
        self.database_url = self.pgbouncer.url(self.database_name)
        self.brokers.form()

    def env(self, name: str, *, failpoints: str | None = None, extra: Mapping[str, str] | None = None,
            broker_url: str | None = None) -> dict[str, str]:
        direct = {"DATABASE_DIRECT_URL": self.direct_url}
        if name == "cli":  # migrations and set-up commands: PostgreSQL itself
            direct["DATABASE_URL"] = self.direct_url
        return super().env(name, failpoints=failpoints or self.failpoints.get(name), broker_url=broker_url,
                           extra={**direct, **(extra or {})})

    # Roles, each on its host ---------------------------------------------------------------------

    def _on(self, host: str, role: str, command: tuple[str, ...], ready: str | None,
            extra: Mapping[str, str] | None = None) -> Process:
        return self.processes.start(host, (*self.network.exec_prefix(host), *command), self.env(host, extra=extra),
                                    role=role, ready_marker=ready)

    @property
    def web_urls(self) -> list[str]:
        return [f"http://{self.network.ip(h)}:{WEB_PORT}" for h in WEBS]

    @property
    def web_url(self) -> str:
        return self.web_urls[0]

    def start_bank(self, seed: int | None = None, *, wait: bool = True) -> BankClient:
        self.bank_url = f"http://{self.network.ip('bank')}:{BANK_PORT}"
        command = (sys.executable, "-m", "bank", "--host", self.network.ip("bank"), "--port", str(BANK_PORT),
                   "--db", str(self.log_dir / "bank.db"), "--seed", str(self.bank_seed if seed is None else seed))
        self._on("bank", "bank", command, None)
        if wait:
            self.wait_bank()
        return self.bank_client()

    def start_webs(self) -> None:
        layout = self.layout
        for index, host in enumerate(WEBS):
            command = (str(BIN / "gunicorn"), "-w", str(layout.web_workers), "--threads", str(layout.web_threads),
                       "--bind", f"{self.network.ip(host)}:{WEB_PORT}", self.design.web_app)
            # web1 sends each exchange's first message itself; web2 leaves every one to the relays.
            self._on(host, "web", command, WEB_READY_MARKER, {"OUTBOX_DIRECT_SEND": "1" if index == 0 else "0"})

    def start_cluster_roles(self) -> None:
        self.start_bank(wait=False)
        self.start_webs()
        for host in RELAYS:  # relay1 first: it takes the lease, relay2 stands by
            self._on(host, "relay", (str(BIN / "flask"), "--app", "app", "relay", "run"),
                     " started (batch ").wait_ready()
        for host in WORKERS:
            self._on(host, "worker", (str(BIN / "dramatiq"), self.design.worker_module, "--processes", "1",
                                      "--threads", str(self.layout.worker_threads), "--worker-shutdown-timeout",
                                      str(self.layout.worker_shutdown_timeout_ms)), WORKER_READY_MARKER)
        self._on("reconciler", "reconciler", (str(BIN / "flask"), "--app", "app", "reconcile", "run"),
                 "reconciler started")
        self.wait_bank()
        for process in self.processes.processes:
            process.wait_ready()
        for url in self.web_urls:
            wait_until(lambda url=url: _answers(url), 60, f"gunicorn at {url}", interval=0.2)

    def queued(self) -> int:
        return self.brokers.messages([QUEUE, f"{QUEUE}.DQ"])


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/exchanges/{uuid.uuid4()}", timeout=2).status_code < 500
    except requests.RequestException:
        return False


@contextlib.contextmanager
def cluster(network: Network, *, env: Mapping[str, str], layout: Layout, bank_seed: int = 1,
            failpoints: Mapping[str, str] | None = None, keep_logs: bool = False) -> Iterator[ClusterTopology]:
    """Servers up, migrated, every role started; all stopped at the end (the caller removes the network)."""
    from harness.provision import run_cli

    log_dir = Path(tempfile.mkdtemp(prefix="fx-cluster-"))
    topo = ClusterTopology(network, log_dir=log_dir, env=env, layout=layout, bank_seed=bank_seed,
                           failpoints=failpoints or {})
    failed = False
    try:
        topo.start_servers()
        run_cli(topo, "db-upgrade")
        yield topo
    except BaseException:
        failed = True
        raise
    finally:
        topo.stop_all()
        if topo.engine is not None:
            topo.engine.dispose()
        if failed or keep_logs:
            print(f"cluster logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
