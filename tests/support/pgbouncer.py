"""A private PgBouncer in transaction pooling, in front of the shared PostgreSQL, on a port of its own.

Every database name maps to 127.0.0.1:5432 with the same name (harness/pgbouncer.py). A small
pool, so that consecutive transactions of one client really do land on different server connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.net import free_private_port
from harness.pgbouncer import pgbouncer_binary, write_config


@contextmanager
def running_pgbouncer() -> Iterator[int]:
    """PgBouncer listening on a free port below 32768 (yielded), stopped and removed at the end.
    Its files live in a directory of its own right under the temporary directory: run as the
    postgres user (it refuses root), it must be able to reach them."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (make test installs Debian's pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="fx-pgbouncer-"))
    port = free_private_port()
    config = write_config(directory, listen_addr="127.0.0.1", port=port, server_host="127.0.0.1")
    # pgbouncer refuses to run as root unless asked to (-u); the postgres user owns nothing here.
    command = [binary, str(config)]
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        for path in directory.iterdir():
            shutil.chown(path, "postgres")
        command = [binary, "-u", "postgres", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = directory / "pgbouncer.log"
                    raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)
