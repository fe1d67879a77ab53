"""Hosts on one machine: network namespaces joined by veth links to one bridge, and the faults between them.

A `Network` makes one namespace per host (`fxc<owner pid>-<host>`) and a switch namespace
holding a bridge; each host gets a veth pair, `eth0` in the host, its peer on the bridge, and
an address of 10.77.0.0/24. Every address lives inside those namespaces: nothing is added to
the machine's own. The faults: `partition(a, b)` drops every packet between two hosts
(iptables in both), `heal(a, b)` ends it; `degrade(delay_ms, loss)` drops a share of each
host's outgoing packets and delays the rest (`harness.netem`: this kernel has no netem qdisc),
`restore()` ends that. `remove()` kills whatever still runs in the namespaces and deletes
them; it is safe to call twice, after a failure, and namespaces a dead run left are removed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from harness.errors import HarnessError

PREFIX = "fxc"
SUBNET = "10.77.0"
#: The NFQUEUE number harness.netem reads in each host (namespaces do not share queues).
NETEM_QUEUE = 7


def missing_tools() -> list[str]:
    """What this machine lacks to build a Network (empty: it can)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    return missing + [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]


def sh(*command: str, check: bool = True) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def _delete_namespace(namespace: str) -> None:
    for pid in sh("ip", "netns", "pids", namespace, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", namespace, check=False)


def remove_stale() -> list[str]:
    """Namespaces of runs whose process is gone (killed before it could clean up): removed."""
    stale = []
    for namespace in _namespaces():
        owner = namespace.removeprefix(PREFIX).split("-", 1)[0]
        if namespace.startswith(PREFIX) and owner.isdigit() and not _alive(int(owner)):
            _delete_namespace(namespace)
            stale.append(namespace)
    return stale


@dataclass
class Network:
    """Hosts by name -> address; `create()` builds them, `remove()` takes them all away."""

    hosts: dict[str, str]
    owner: int = field(default_factory=os.getpid)
    partitions: set[tuple[str, str]] = field(default_factory=set)
    degraded: bool = False

    @classmethod
    def of(cls, names: Sequence[str]) -> Network:
        return cls({name: f"{SUBNET}.{10 + i}" for i, name in enumerate(names)})

    def to_json(self) -> str:
        return json.dumps({"hosts": self.hosts, "owner": self.owner})

    @classmethod
    def from_json(cls, text: str) -> Network:
        data = json.loads(text)
        return cls(dict(data["hosts"]), int(data["owner"]))

    def namespace(self, host: str) -> str:
        return f"{PREFIX}{self.owner}-{host}"

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.owner}-switch"

    def ip(self, host: str) -> str:
        return self.hosts[host]

    def exec_prefix(self, host: str) -> tuple[str, ...]:
        """Prefix a command with this to run it on `host` (`ip netns exec` execs it: same pid)."""
        return ("ip", "netns", "exec", self.namespace(host))

    def run(self, host: str, *command: str, check: bool = True) -> str:
        return sh(*self.exec_prefix(host), *command, check=check)

    def create(self) -> Network:
        remove_stale()
        try:
            sh("ip", "netns", "add", self.switch)
            sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", "br0", "up")
            for index, (host, address) in enumerate(self.hosts.items()):
                namespace, port = self.namespace(host), f"p{index}"
                sh("ip", "netns", "add", namespace)
                sh("ip", "link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", port,
                   "netns", self.switch)
                sh("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
                sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
                sh("ip", "-n", namespace, "link", "set", "eth0", "up")
                sh("ip", "-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for namespace in [self.namespace(h) for h in self.hosts] + [self.switch]:
            if namespace in _namespaces():
                _delete_namespace(namespace)

    # Faults ----------------------------------------------------------------------------------

    def _drop_rules(self, action: str, host: str, peer: str) -> None:
        self.run(host, "iptables", action, "INPUT", "-s", self.ip(peer), "-j", "DROP")
        self.run(host, "iptables", action, "OUTPUT", "-d", self.ip(peer), "-j", "DROP")

    def partition(self, group: Iterable[str], others: Iterable[str]) -> None:
        """Every packet between a host of `group` and one of `others` is dropped, both ways."""
        for a in group:
            for b in others:
                if (a, b) not in self.partitions:
                    self._drop_rules("-I", a, b)
                    self._drop_rules("-I", b, a)
                    self.partitions.add((a, b))

    def heal(self) -> None:
        for a, b in sorted(self.partitions):
            self._drop_rules("-D", a, b)
            self._drop_rules("-D", b, a)
        self.partitions.clear()

    def degrade(self, delay_ms: int, loss: float) -> None:
        """On every host: `loss` of outgoing packets dropped, the others held `delay_ms` (harness.netem)."""
        for host in self.hosts:
            self.run(host, "iptables", "-A", "OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random",
                     "--probability", str(loss), "-j", "DROP")
            self.run(host, "iptables", "-A", "OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num",
                     str(NETEM_QUEUE), "--queue-bypass")
        self.degraded = True

    def netem_command(self, host: str, delay_ms: int) -> tuple[str, ...]:
        return (*self.exec_prefix(host), sys.executable, "-m", "harness.netem", "--queue", str(NETEM_QUEUE),
                "--delay-ms", str(delay_ms))

    def restore(self) -> None:
        for host in self.hosts:
            self.run(host, "iptables", "-F", "OUTPUT")
            self.run(host, "iptables", "-F", "INPUT")
        self.partitions.clear()
        self.degraded = False
