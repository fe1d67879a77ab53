"""Private servers: a redis-server of the caller's own, never the shared one.

It runs in the foreground as our child, on its own port (below 32768) and directory, so
a test or benchmark can kill -9 exactly this process and start it again on the same
directory (its append-only file comes back).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from harness.errors import ProcessExited
from harness.net import free_private_port
from harness.processes import tail
from harness.waits import wait_until

#: Persistence of a server that must survive kill -9: the append-only file, fsynced every
#: second (at most about 1 s of writes lost), no RDB snapshots.
AOF_EVERY_SECOND = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
#: Seconds a starting server gets to answer PING (it may be loading its append-only file).
START_TIMEOUT_SECONDS = 30.0


@dataclass
class RedisServer:
    """A private redis-server: `start()`, `kill()` (SIGKILL, no shutdown save), `start()` again."""

    port: int
    data_dir: Path
    arguments: tuple[str, ...] = AOF_EVERY_SECOND
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def command(self) -> tuple[str, ...]:
        return ("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--logfile", str(self.log_path), "--daemonize", "no", *self.arguments)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        assert not self.is_running(), "this redis-server is already running"
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)
        try:
            wait_until(lambda: self._answers_ping(client), timeout,
                       lambda: f"redis-server on port {self.port} (it may still be loading its AOF): "
                               f"{self.describe()}", interval=0.1)
        finally:
            client.close()

    def _answers_ping(self, client: redis.Redis) -> bool:
        if not self.is_running():
            raise ProcessExited(f"redis-server exited: {self.describe()}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what appendfsync already wrote survives."""
        if self.process is not None and self.is_running():
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)

    def describe(self) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return f"redis-server port {self.port}, dir {self.data_dir}; its log:\n{tail(log, 30)}"


def start_private_redis(data_dir: Path, *arguments: str, port: int | None = None) -> RedisServer:
    """Start a RedisServer (with `arguments`, else AOF_EVERY_SECOND); the caller must kill() it.

    Raises FileNotFoundError when redis-server is not installed.
    """
    if shutil.which("redis-server") is None:
        raise FileNotFoundError("redis-server must be installed")
    server = RedisServer(port or free_private_port(), data_dir, tuple(arguments) or AOF_EVERY_SECOND)
    server.start()
    return server
