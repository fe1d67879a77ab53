"""A topology with servers of its own, for the benchmarks: a scratch database, a private redis-server.

`provisioned()` creates a PostgreSQL database (migrated with the release command) and a
private redis-server (its own port below 32768, its own directory, append-only with fsync
every second), and yields a Topology on them; at the end every process is stopped, the
server killed and the database dropped. The logs are kept if the run failed. Nothing here
touches the shared Redis or any other database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from harness.cpu import CpuMeter, ProcessTable, postgres_backends, tree
from harness.databases import POSTGRES_ADMIN_URL, ScratchDatabase, scratch_name
from harness.designs import Design, Layout
from harness.errors import HarnessError
from harness.net import free_private_port
from harness.processes import BIN, PROJECT_ROOT, shown
from harness.servers import RedisServer
from harness.topology import HARNESS_APPLICATION_NAME, Topology
from models import accounts
from services.credentials import Role, issue_api_key

#: Seconds one `flask` command (migrations, open-account) may take.
CLI_TIMEOUT_SECONDS = 120


class Provisioned(Topology):
    """A Topology that owns its database and redis-server (see `provisioned`)."""

    def __init__(self, *, database: ScratchDatabase, redis_server: RedisServer, **topology: Any) -> None:
        super().__init__(**topology)
        self.database = database
        self.redis_server = redis_server
        #: Keep the logs: set when the run failed, or by a benchmark that judged the run failed.
        self.failed = False


@contextlib.contextmanager
def provisioned(design: Design, layout: Layout, *, env: Mapping[str, str], label: str, bank_seed: int = 1,
                keep_logs: bool = False, admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[Provisioned]:
    """A migrated scratch database, a private redis-server and a Topology on them; all removed at the end."""
    work_dir = Path(tempfile.mkdtemp(prefix=f"fx-{label}-{design.name}-"))
    with ScratchDatabase(admin_url, scratch_name(label)) as database:
        engine = create_engine(database.url, pool_size=4, max_overflow=4, pool_pre_ping=True,
                               connect_args={"application_name": HARNESS_APPLICATION_NAME})
        redis_server = RedisServer(free_private_port(), work_dir / "redis")
        topo = Provisioned(database=database, redis_server=redis_server, log_dir=work_dir, engine=engine,
                           database_url=database.url, broker_url=redis_server.url, env=env, design=design,
                           layout=layout, bank_seed=bank_seed)
        topo.commands.append(database.command)
        try:
            redis_server.start()
            topo.commands.append(shown(redis_server.command))
            run_cli(topo, "db-upgrade")
            yield topo
        except BaseException:
            topo.failed = True
            raise
        finally:
            topo.stop_all()
            redis_server.kill()
            engine.dispose()
    if not topo.failed and not keep_logs:
        shutil.rmtree(work_dir, ignore_errors=True)


def _flask(*arguments: str) -> tuple[str, ...]:
    return (str(BIN / "flask"), "--app", "app", *arguments)


def run_cli(topo: Topology, *arguments: str) -> str:
    """`flask --app app <arguments>` against the topology's servers; its output."""
    command = _flask(*arguments)
    topo.commands.append(shown(command))
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=topo.env("cli"), capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{shown(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def open_accounts(topo: Topology, count: int, funding: Mapping[str, str], parallel: int = 4) -> list[str]:
    """`flask open-account` per account, a few at a time; returns the account ids."""
    fund = [f"--fund={currency}:{amount}" for currency, amount in funding.items()]
    commands = [_flask("open-account", f"bench-customer-{i}", *fund) for i in range(count)]
    topo.commands.append(shown(commands[0]) + f"   (x{count}, bench-customer-0..{count - 1})")
    ids: list[str] = []
    for start in range(0, count, parallel):
        running = [subprocess.Popen(c, cwd=PROJECT_ROOT, env=topo.env("cli"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for c in commands[start:start + parallel]]
        for process in running:
            out, err = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
            if process.returncode != 0:
                raise HarnessError(f"open-account failed: {out}\n{err}")
            ids.append(out.strip().splitlines()[-1])
    return ids


def api_keys(topo: Topology, account_ids: Sequence[str]) -> dict[str, str]:
    """A customer API key per account (for the JSON API's `Authorization: Bearer`), issued in
    this process, as no command prints one."""
    wanted = [uuid.UUID(a) for a in account_ids]
    with topo.engine.connect() as conn:
        owners = dict(conn.execute(select(accounts.c.id, accounts.c.customer_id)
                                   .where(accounts.c.id.in_(wanted))).all())
    topo.commands.append("services.credentials.issue_api_key(role=customer) per account's customer (in the harness)")
    return {a: issue_api_key(topo.engine, role=Role.CUSTOMER, label="bench", customer_id=owners[uuid.UUID(a)])
            for a in account_ids}


def cpu_meter(topo: Provisioned) -> CpuMeter:
    """CPU by role: each process's tree, our PostgreSQL backends (by the client they serve),
    our redis-server, and this process (the harness)."""

    def roles(table: ProcessTable) -> dict[int, str]:
        found: dict[int, str] = {}
        for process in topo.processes.processes:
            if process.is_running():
                found.update(dict.fromkeys(tree(table, [process.pid]), process.role))
        if topo.redis_server.process is not None:
            found[topo.redis_server.process.pid] = "redis"
        found[os.getpid()] = "harness"
        role_of = {f"fx-{p.name}": p.role for p in topo.processes.processes}
        clients = topo.database.backend_clients()
        for pid in postgres_backends(table, topo.database.name):
            client = clients.get(pid, "?")
            role = role_of.get(client, client.removeprefix("fx-"))
            # The harness's own backends (waiting, counting) are the client's cost, not the system's.
            found[pid] = "harness" if role == "harness" else f"postgres ({role})"
        return found

    return CpuMeter(roles)
