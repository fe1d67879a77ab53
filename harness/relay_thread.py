"""An outbox relay in a thread of the caller's process, for tests and benchmarks that watch it closely."""

from __future__ import annotations

import threading

from outbox.relay import Relay

#: Seconds `stop()` waits for the loop to finish its batch.
STOP_TIMEOUT_SECONDS = 10.0


class RelayThread:
    """`Relay.run()` in a daemon thread; `stop()` ends it and closes its publisher and waiter."""

    def __init__(self, relay: Relay, name: str = "relay") -> None:
        self.relay = relay
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.relay.run()
        except BaseException as error:  # surfaced by describe(), as a thread cannot raise to its caller
            self.error = error

    def start(self) -> RelayThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.relay.stop()
        self.thread.join(timeout)
        self.relay.publisher.close()
        if self.relay.waiter is not None:
            self.relay.waiter.close()

    def describe(self) -> str:
        state = "running" if self.thread.is_alive() else "stopped"
        error = f"; died of {self.error!r}" if self.error else ""
        return f"in-process relay ({state}, {self.relay.totals}){error}"
