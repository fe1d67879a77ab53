"""Running a relay as a process: signals, its metrics port, and a clean close."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from prometheus_client import start_http_server

from outbox.relay import Relay

log = logging.getLogger("outbox.daemon")


def run_daemon(relay: Relay, *, metrics_port: int = 0) -> None:
    """Run until SIGTERM or SIGINT; the batch in hand is committed before exiting."""

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping after the current batch", signal.Signals(signum).name)
        relay.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if metrics_port:
        start_http_server(metrics_port)
    try:
        relay.run()
    finally:
        relay.publisher.close()
        if relay.waiter is not None:
            relay.waiter.close()
