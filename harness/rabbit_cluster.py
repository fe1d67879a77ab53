"""A RabbitMQ cluster of its own: one node per host of a harness.netns.Network, never the shared server.

Each node runs Debian's rabbitmq-server in the foreground in its host's namespace, with its
own directory, configuration and Erlang cookie, and a long node name on its address
(`rabbit@10.77.0.21`), so no hostname has to resolve. The first node starts the cluster; the
others join it (`rabbitmqctl join_cluster`). Quorum queues declared afterwards get a member
on every node. `kill(host)` is kill -9 of a node; `start(host)` brings it back on its data,
and it rejoins by itself.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.errors import HarnessError
from harness.netns import Network
from harness.processes import Process, ProcessGroup, clean_environment

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
READY_MARKER = "Server startup complete"
CONFIG = """\
listeners.tcp.default = 5672
loopback_users = none
log.console = true
log.console.level = info
log.file = false
disk_free_limit.absolute = 50MB
"""
#: Seconds a node gets to boot (Erlang and Mnesia, on a busy 2-core machine).
START_TIMEOUT_SECONDS = 120.0
CTL_TIMEOUT_SECONDS = 90


class RabbitCluster:
    def __init__(self, network: Network, hosts: Sequence[str], work_dir: Path, processes: ProcessGroup) -> None:
        self.network = network
        self.hosts = list(hosts)
        self.work_dir = work_dir
        self.processes = processes
        self.cookie = secrets.token_hex(16)
        self.nodes: dict[str, Process] = {}

    def node_name(self, host: str) -> str:
        return f"rabbit@{self.network.ip(host)}"

    def url(self, host: str, heartbeat_seconds: int = 5) -> str:
        # A short heartbeat: a partitioned consumer is noticed, and its unacknowledged messages requeued, soon.
        return f"amqp://guest:guest@{self.network.ip(host)}:5672/%2F?heartbeat={heartbeat_seconds}"

    def urls(self, heartbeat_seconds: int = 5) -> str:
        """Every node's URL, comma-separated: clients try them in turn (BROKER_URL)."""
        return ",".join(self.url(h, heartbeat_seconds) for h in self.hosts)

    def _env(self, host: str) -> dict[str, str]:
        directory = self.work_dir / host
        env = clean_environment()
        env.update(HOME=str(directory), RABBITMQ_NODENAME=self.node_name(host), RABBITMQ_USE_LONGNAME="true",
                   RABBITMQ_MNESIA_BASE=str(directory / "mnesia"), RABBITMQ_LOG_BASE=str(directory / "log"),
                   RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq.conf"),
                   RABBITMQ_ADVANCED_CONFIG_FILE=str(directory / "advanced.config"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
                   # Not Debian's /etc/rabbitmq/rabbitmq-env.conf: it binds Erlang to 127.0.0.1.
                   RABBITMQ_CONF_ENV_FILE=str(directory / "rabbitmq-env.conf"),
                   RABBITMQ_PID_FILE=str(directory / "rabbit.pid"))
        return env

    def _prepare(self, host: str) -> None:
        directory = self.work_dir / host
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rabbitmq.conf").write_text(CONFIG)
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq-env.conf").write_text("")
        cookie = directory / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)

    def start(self, host: str, *, wait: bool = True) -> Process:
        node = self.nodes.get(host)
        if node is None:
            self._prepare(host)
            node = self.processes.start(f"rabbitmq-{host}", (*self.network.exec_prefix(host), SERVER),
                                        self._env(host), role="broker", ready_marker=READY_MARKER)
            self.nodes[host] = node
        else:
            node.start()
        if wait:
            node.wait_ready(START_TIMEOUT_SECONDS)
        return node

    def kill(self, host: str) -> None:
        self.nodes[host].kill()

    def ctl(self, host: str, *arguments: str) -> str:
        """rabbitmqctl against the node on `host`, run on that host."""
        command = (*self.network.exec_prefix(host), CTL, "--longnames", "-n", self.node_name(host), *arguments)
        result = subprocess.run(command, env=self._env(host), capture_output=True, text=True,
                                timeout=CTL_TIMEOUT_SECONDS, check=False)
        if result.returncode != 0:
            raise HarnessError(f"rabbitmqctl {' '.join(arguments)} on {host} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def form(self) -> None:
        """Start every node (together), then join the others to the first."""
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(self.start, self.hosts))
        first = self.hosts[0]
        for host in self.hosts[1:]:
            self.ctl(host, "stop_app")
            self.ctl(host, "join_cluster", self.node_name(first))
            self.ctl(host, "start_app")
        running = self.running_nodes(first)
        if len(running) != len(self.hosts):
            raise HarnessError(f"the RabbitMQ cluster formed with {running}, not all of {self.hosts}")

    def running_nodes(self, host: str) -> list[str]:
        text = self.ctl(host, "cluster_status", "--formatter", "json")
        match = re.search(r'"running_nodes":\[([^\]]*)\]', text)
        return re.findall(r'"([^"]+)"', match.group(1)) if match else []

    def leader_of(self, queue: str, asking: str | None = None) -> str:
        """The host whose node leads the quorum queue `queue`."""
        ask = asking or next(h for h in self.hosts if self.nodes[h].is_running())
        for line in self.ctl(ask, "list_queues", "name", "leader", "--quiet", "--no-table-headers").splitlines():
            name, _, leader = line.strip().partition("\t")
            if name == queue:
                return next(h for h in self.hosts if self.node_name(h) == leader.strip())
        raise HarnessError(f"no quorum queue {queue!r} on the cluster (yet)")

    def messages(self, queue_names: Sequence[str], asking: str | None = None) -> int:
        """Ready plus unacknowledged messages of the queues named (-1 when no node answers)."""
        ask = asking or next(h for h in self.hosts if self.nodes[h].is_running())
        try:
            text = self.ctl(ask, "list_queues", "name", "messages", "--quiet", "--no-table-headers")
        except (HarnessError, subprocess.TimeoutExpired):
            return -1
        counts = dict(line.split("\t") for line in text.strip().splitlines() if "\t" in line)
        return sum(int(counts.get(q, 0)) for q in queue_names)
