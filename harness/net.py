"""Free TCP ports for the harness's private servers."""

from __future__ import annotations

import random
import socket

from harness.errors import HarnessError
from harness.slots import current_slot

#: Ports of private servers: below 32768, where the kernel never hands out outgoing
#: (ephemeral) ports, and away from the shared servers (5432, 6379, 5672).
PRIVATE_PORT_RANGE = (20_000, 32_000)
#: Random ports tried before giving up.
PORT_ATTEMPTS = 200

#: Ports this process handed out already: a server may not have bound its port yet when the
#: next one is asked for, so a free port is not enough to tell.
_handed_out: set[int] = set()


def slot_port_range() -> tuple[int, int]:
    """This test worker's share of PRIVATE_PORT_RANGE: parallel workers of one run never pick the
    same port; separate runs side by side (another session) rarely do, as the pick is random."""
    slot = current_slot()
    low, high = PRIVATE_PORT_RANGE
    width = (high - low) // slot.count
    start = low + slot.index * width
    return start, start + width - 1


def free_private_port() -> int:
    """A TCP port on 127.0.0.1 in this worker's share of PRIVATE_PORT_RANGE that nothing listens
    on right now and that this process has not handed out before."""
    low, high = slot_port_range()
    for _ in range(PORT_ATTEMPTS):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise HarnessError(f"no free port in {low}-{high}")
