"""PgBouncer in transaction pooling: its configuration and binary (Debian's `pgbouncer`, see the Makefile).

Used by the tests' PgBouncer on loopback (tests/support/pgbouncer.py) and by the cluster's
PgBouncer host (harness.cluster_servers). Every database name maps to the server with the
same name; trust auth. It refuses to run as root, so it is started with `-u postgres`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CONFIG = """\
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
; a frozen client's open transaction is ended here, as DB_IDLE_IN_TRANSACTION_TIMEOUT_MS does directly
idle_transaction_timeout = 15
{log_line}pidfile = {dir}/pgbouncer.pid
"""


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (str(p) for p in (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")) if p.exists()), None)


def write_config(directory: Path, *, listen_addr: str, port: int, server_host: str, server_port: int = 5432,
                 pool_size: int = 4, logfile: bool = True) -> Path:
    """users.txt and pgbouncer.ini in `directory`, written; the ini's path."""
    (directory / "users.txt").write_text('"postgres" ""\n')
    config = directory / "pgbouncer.ini"
    log_line = f"logfile = {directory}/pgbouncer.log\n" if logfile else ""
    config.write_text(CONFIG.format(listen_addr=listen_addr, port=port, server_host=server_host,
                                    server_port=server_port, dir=directory, pool_size=pool_size, log_line=log_line))
    return config
