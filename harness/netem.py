"""Delay every packet a host sends: an NFQUEUE reader that accepts each packet `--delay-ms` after it queued.

    ip netns exec <host> python -m harness.netem --queue 7 --delay-ms 200

This machine's kernel has no netem qdisc, so the latency is added in user space: the host's
iptables hands its outgoing packets to NFQUEUE (harness.netns.Network.degrade), and this
process, in the same namespace, gives the verdict ACCEPT once the delay has passed. One delay
for every packet keeps them in order, so one batch verdict ("every packet up to this id")
accepts all that are due. The rule carries `--queue-bypass`: while no reader is bound,
packets pass undelayed, so a dead reader never partitions a host.
"""

from __future__ import annotations

import argparse
import collections
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NLA_TYPE_MASK = 0x3FFF
SO_RCVBUFFORCE = 33
#: Packets the kernel may hold for us: 200 ms of a busy host's traffic.
QUEUE_MAXLEN = 1 << 16
READY = "netem: delaying every outgoing packet by"


def attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(kind: int, queue: int, attributes: Sequence[bytes], *, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    """A nfnetlink queue message: netlink header, nfgenmsg (the queue number, big-endian), attributes."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + b"".join(attributes)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def bind_messages(queue: int) -> list[bytes]:
    return [
        message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_CMD, struct.pack(">BBH", NFQNL_CFG_CMD_BIND, 0,
                                                                              socket.AF_INET))],
                flags=NLM_F_REQUEST | NLM_F_ACK, seq=1),
        message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META)),
                                          attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN))],
                flags=NLM_F_REQUEST | NLM_F_ACK, seq=2),
    ]


def accept_up_to(queue: int, packet_id: int) -> bytes:
    return message(NFQNL_MSG_VERDICT_BATCH, queue, [attribute(NFQA_VERDICT_HDR,
                                                              struct.pack(">II", NF_ACCEPT, packet_id))])


def parse(data: bytes) -> Iterator[tuple[str, int]]:
    """("packet", id) per queued packet, ("error", errno) per netlink error or ack (errno 0)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        if kind == NLMSG_ERROR:
            yield "error", -struct.unpack_from("=i", data, offset + 16)[0]
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            cursor, end = offset + 20, offset + length
            while cursor + 4 <= end:
                size, attr = struct.unpack_from("=HH", data, cursor)
                if size < 4:
                    break
                if attr & NLA_TYPE_MASK == NFQA_PACKET_HDR:
                    yield "packet", struct.unpack_from(">I", data, cursor + 4)[0]
                cursor += size + (-size % 4)
        offset += length + (-length % 4)


def open_queue(queue: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    sock.bind((0, 0))
    for request in bind_messages(queue):
        sock.send(request)
        for kind, value in parse(sock.recv(65536)):
            if kind == "error" and value:
                raise OSError(value, f"binding NFQUEUE {queue}: {value}")
    return sock


def delay_forever(sock: socket.socket, queue: int, delay_seconds: float) -> None:
    pending: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        if select.select([sock], [], [], timeout)[0]:
            try:
                data = sock.recv(1 << 20)
            except OSError:  # ENOBUFS: messages lost; a later batch verdict accepts their packets
                continue
            due = time.monotonic() + delay_seconds
            pending.extend((due, packet_id) for kind, packet_id in parse(data) if kind == "packet")
        now, last = time.monotonic(), None
        while pending and pending[0][0] <= now:
            last = pending.popleft()[1]
        if last is not None:
            sock.send(accept_up_to(queue, last))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.netem", description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, required=True)
    args = parser.parse_args(argv)
    sock = open_queue(args.queue)
    print(f"{READY} {args.delay_ms} ms (NFQUEUE {args.queue})", flush=True)
    delay_forever(sock, args.queue, args.delay_ms / 1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
