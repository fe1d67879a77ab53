"""The cluster run's network (harness/netns.py) and its user-space latency (harness/netem.py).

The message packing is a pure unit; the rest builds two real hosts in network namespaces
(root only: skipped elsewhere, failed in CI) and sends real TCP between them, counting what
arrives, never timing it.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness import netem
from harness.netns import PREFIX, Network, missing_tools, remove_stale, sh
from tests.conftest import IN_CI

PORT = 7000
ECHO = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {PORT})); s.listen(); print('listening', flush=True)\n"
        "while True:\n    c, _ = s.accept(); c.sendall(b'pong'); c.close()\n")


def packet_message(queue: int, packet_id: int) -> bytes:
    header = netem.attribute(netem.NFQA_PACKET_HDR, struct.pack(">IHB", packet_id, 0x0800, 3))
    return netem.message(netem.NFQNL_MSG_PACKET, queue, [header])


def test_queued_packets_are_read_by_id_from_a_run_of_netlink_messages() -> None:
    data = packet_message(7, 41) + packet_message(7, 42)
    assert list(netem.parse(data)) == [("packet", 41), ("packet", 42)]


def test_a_netlink_error_is_read_as_its_errno() -> None:
    error = struct.pack("=IHHII", 36, netem.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    assert list(netem.parse(error)) == [("error", 1)]


def test_one_batch_verdict_accepts_every_packet_up_to_an_id() -> None:
    message = netem.accept_up_to(7, 99)
    length, kind = struct.unpack_from("=IH", message)
    assert length == len(message)
    assert kind == (netem.NFNL_SUBSYS_QUEUE << 8) | netem.NFQNL_MSG_VERDICT_BATCH
    assert struct.unpack_from(">H", message, 18)[0] == 7  # the queue, big-endian, in nfgenmsg
    assert struct.unpack_from(">II", message, 24) == (netem.NF_ACCEPT, 99)


def require_namespaces() -> None:
    """Skip without the tools on a developer's machine; fail in CI, where they must be there."""
    missing = missing_tools()
    if missing:
        message = f"network namespaces need {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def two_hosts() -> Iterator[Network]:
    require_namespaces()
    network = Network.of(["a", "b"]).create()
    server = subprocess.Popen([*network.exec_prefix("b"), sys.executable, "-c", ECHO], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("listening")
        yield network
    finally:
        network.remove()
        server.wait(10)


def reaches(network: Network, timeout: float = 2.0) -> bool:
    address = (network.ip("b"), PORT)
    probe = (f"import socket\ntry:\n    s = socket.create_connection({address!r}, timeout={timeout})\n"
             "    print(s.recv(4).decode())\nexcept OSError:\n    print('unreachable')\n")
    return network.run("a", sys.executable, "-c", probe).strip() == "pong"


@pytest.mark.netns
def test_two_hosts_talk_over_their_own_addresses_and_a_partition_cuts_them_until_healed(two_hosts: Network) -> None:
    assert reaches(two_hosts)
    two_hosts.partition(["a"], ["b"])
    assert not reaches(two_hosts, timeout=1.0)
    two_hosts.heal()
    assert reaches(two_hosts)


@pytest.mark.netns
def test_the_delay_reader_passes_every_packet_and_a_dead_reader_passes_them_undelayed(two_hosts: Network) -> None:
    readers = [subprocess.Popen(two_hosts.netem_command(h, 50), stdout=subprocess.PIPE, text=True)
               for h in two_hosts.hosts]
    try:
        for reader in readers:
            assert reader.stdout is not None and reader.stdout.readline().startswith(netem.READY)
        two_hosts.degrade(50, 0.0)
        assert all(reaches(two_hosts) for _ in range(3))
        counted = two_hosts.run("a", "iptables", "-v", "-n", "-x", "-L", "OUTPUT")
        queued = next(line for line in counted.splitlines() if "NFQUEUE" in line)
        assert int(queued.split()[0]) > 0  # packets went through the reader
    finally:
        for reader in readers:
            reader.kill()
            reader.wait(10)
    assert reaches(two_hosts)  # --queue-bypass: no reader, no partition
    two_hosts.restore()


@pytest.mark.netns
def test_namespaces_a_dead_run_left_behind_are_removed() -> None:
    require_namespaces()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = f"{PREFIX}{dead.pid}-host"
    sh("ip", "netns", "add", leftover)
    try:
        assert leftover in remove_stale()
        assert leftover not in sh("ip", "netns", "list")
    finally:
        sh("ip", "netns", "del", leftover, check=False)


def test_an_address_is_one_of_the_hosts_subnet() -> None:
    network = Network.of(["ctl", "postgres"])
    assert network.ip("ctl") == "10.77.0.10" and network.ip("postgres") == "10.77.0.11"
    assert network.exec_prefix("ctl") == ("ip", "netns", "exec", f"{PREFIX}{network.owner}-ctl")
    assert Network.from_json(network.to_json()) == network
