"""Sentry in a test: everything it would send is kept in memory (`sentry` fixture, a pytest plugin)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sqlalchemy import Engine

from infra import observability
from tests.conftest import settings_for

#: A DSN that is never contacted: the transport below keeps every envelope in memory.
OFFLINE_DSN = "http://public@127.0.0.1:1/1"


class CollectingTransport(Transport):
    """Keeps what Sentry would send; `events_seen` is set whenever an error event arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []
        self.lock = threading.Lock()
        self.events_seen = threading.Event()

    def capture_envelope(self, envelope: Envelope) -> None:
        with self.lock:
            self.envelopes.append(envelope)
        if envelope.get_event() is not None:
            self.events_seen.set()

    def transactions(self) -> list[dict[str, Any]]:
        with self.lock:
            return [t for e in self.envelopes if (t := e.get_transaction_event()) is not None]

    def errors(self) -> list[dict[str, Any]]:
        with self.lock:
            return [t for e in self.envelopes if (t := e.get_event()) is not None]

    def transaction(self, name: str) -> dict[str, Any]:
        matching = [t for t in self.transactions() if t.get("transaction") == name]
        assert len(matching) == 1, f"{len(matching)} transactions named {name}: {self.names()}"
        return matching[0]

    def names(self) -> list[str]:
        return [t.get("transaction", "?") for t in self.transactions()]


@pytest.fixture
def sentry(engine: Engine) -> Iterator[CollectingTransport]:
    """Sentry as the worker starts it (Flask, SQLAlchemy, Dramatiq), sampling every trace, sending nowhere."""
    assert not sentry_sdk.get_client().is_active(), "another test left Sentry running"
    transport = CollectingTransport()
    settings = settings_for(engine, sentry_dsn=OFFLINE_DSN, sentry_traces_sample_rate=1.0)
    # A release of its own: without one the SDK asks `git rev-parse` (a process) for it.
    assert observability.init_sentry(settings, component="test", dramatiq=True, transport=transport,
                                     release="fx-outbox-tests")
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        sentry_sdk.get_isolation_scope().remove_tag("component")
    assert not sentry_sdk.get_client().is_active()
