"""PostgreSQL and PgBouncer of their own, each on a host of a harness.netns.Network.

`PostgresHost` initialises a cluster in a directory of the run's (initdb as the postgres
user, trust auth) and runs `postgres` in the foreground on the host's address; `kill()` is
kill -9. `PgBouncerHost` runs Debian's pgbouncer in transaction pooling in front of it;
`restart()` kills it and starts it again on the same address, as an operator's restart looks
to its clients: every connection through it drops.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text

from harness.errors import HarnessError
from harness.netns import SUBNET, Network
from harness.pgbouncer import pgbouncer_binary, write_config
from harness.processes import Process, ProcessGroup, clean_environment

POSTGRES_BIN = Path("/usr/lib/postgresql")
AS_POSTGRES = ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups")
POSTGRES_READY = "database system is ready to accept connections"
PGBOUNCER_READY = "process up"
#: Pooled clients cannot send this as a startup option; the database carries it instead.
IDLE_IN_TRANSACTION_TIMEOUT = "15s"


def postgres_bindir() -> Path | None:
    versions = sorted(POSTGRES_BIN.glob("*/bin/postgres"))
    return versions[-1].parent if versions else None


def _owned_by_postgres(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.chown(directory, "postgres", "postgres")
    for parent in directory.parents:  # postgres must be able to reach it
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    return directory


class PostgresHost:
    def __init__(self, network: Network, host: str, work_dir: Path, processes: ProcessGroup) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise HarnessError("PostgreSQL's server binaries are not installed under /usr/lib/postgresql")
        self.network, self.host, self.bindir, self.processes = network, host, bindir, processes
        self.data_dir = work_dir / "postgres"
        self.process: Process | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.network.ip(self.host)}:5432/{database}"

    def init(self) -> None:
        _owned_by_postgres(self.data_dir)
        result = subprocess.run((*AS_POSTGRES, str(self.bindir / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                                 "-U", "postgres", "-E", "UTF8", "--no-sync"), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise HarnessError(f"initdb failed: {result.stdout}{result.stderr}")
        # initdb trusts only local connections; the other hosts are on the namespaces' subnet.
        with (self.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")

    def start(self) -> Process:
        if self.process is None:
            command = (*self.network.exec_prefix(self.host), *AS_POSTGRES, str(self.bindir / "postgres"),
                       "-D", str(self.data_dir), "-c", f"listen_addresses={self.network.ip(self.host)}",
                       "-c", f"unix_socket_directories={self.data_dir}", "-c", "max_connections=300")
            self.process = self.processes.start("postgres", command, clean_environment(), role="postgres",
                                                ready_marker=POSTGRES_READY)
        else:
            self.process.start()
        self.process.wait_ready()
        return self.process

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                conn.execute(text(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = '
                                  f"'{IDLE_IN_TRANSACTION_TIMEOUT}'"))
        finally:
            admin.dispose()
        return self.url(name)


class PgBouncerHost:
    PORT = 6432

    def __init__(self, network: Network, host: str, server: PostgresHost, work_dir: Path,
                 processes: ProcessGroup, pool_size: int = 40) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise HarnessError("pgbouncer is not installed (make test installs Debian's pgbouncer)")
        self.network, self.host, self.processes = network, host, processes
        directory = _owned_by_postgres(work_dir / "pgbouncer")
        config = write_config(directory, listen_addr=network.ip(host), port=self.PORT,
                              server_host=network.ip(server.host), pool_size=pool_size, logfile=False)
        for path in directory.iterdir():
            shutil.chown(path, "postgres", "postgres")
        self.command = (*network.exec_prefix(host), binary, "-u", "postgres", str(config))
        self.process: Process | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.network.ip(self.host)}:{self.PORT}/{database}"

    def start(self) -> Process:
        if self.process is None:
            self.process = self.processes.start("pgbouncer", self.command, clean_environment(), role="pgbouncer",
                                                ready_marker=PGBOUNCER_READY)
        else:
            self.process.start()
        self.process.wait_ready()
        return self.process

    def restart(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.start()
