"""Free TCP ports for the harness's private servers."""

from __future__ import annotations

import random
import socket

from harness.errors import HarnessError

#: Ports of private servers: below 32768, where the kernel never hands out outgoing
#: (ephemeral) ports, and away from the shared servers (5432, 6379, 5672).
PRIVATE_PORT_RANGE = (20_000, 32_000)
#: Random ports tried before giving up.
PORT_ATTEMPTS = 200


def free_private_port() -> int:
    """A TCP port on 127.0.0.1 in PRIVATE_PORT_RANGE that nothing listens on right now.

    Random rather than sequential, so parallel test sessions rarely pick the same one.
    """
    for _ in range(PORT_ATTEMPTS):
        port = random.randint(*PRIVATE_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise HarnessError(f"no free port in {PRIVATE_PORT_RANGE}")
