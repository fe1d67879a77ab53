"""A pooled connection is checked at checkout only when it sat idle: a connection in constant use
costs no extra round trip, and one a failover killed while idle costs no request an error."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from harness.waits import wait_until
from infra import database
from infra.database import IDLE_PINGS, make_engine

pytestmark = pytest.mark.postgres

IDLE_SECONDS = 0.05
#: Bound on waiting for PostgreSQL to end a terminated backend: it is asynchronous, and usually takes milliseconds.
GONE_WITHIN_SECONDS = 10.0


@pytest.fixture
def web_engine(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setattr(database, "PING_IDLE_AFTER_SECONDS", IDLE_SECONDS)
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def backend_of(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate(pg_engine: Engine, pid: int) -> None:
    """Kill backend `pid` and wait until it has exited: pg_terminate_backend only signals it, and a
    checkout before it exits would still find the connection alive."""
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        conn.commit()
    wait_until(lambda: not is_running(pg_engine, pid), GONE_WITHIN_SECONDS, f"backend {pid} to exit")


def is_running(pg_engine: Engine, pid: int) -> bool:
    with pg_engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                            {"pid": pid}).scalar_one() > 0


def test_a_connection_in_constant_use_is_not_pinged(web_engine: Engine) -> None:
    backend_of(web_engine)
    before = IDLE_PINGS._value.get()
    for _ in range(20):
        backend_of(web_engine)  # checked out again at once: no ping
    assert IDLE_PINGS._value.get() == before


def test_a_connection_killed_while_idle_is_replaced_at_checkout_and_the_request_succeeds(
        web_engine: Engine, pg_engine: Engine) -> None:
    killed = backend_of(web_engine)
    idle_since = time.monotonic()  # the connection went back to the pool before this
    terminate(pg_engine, killed)
    wait_until(lambda: time.monotonic() - idle_since > IDLE_SECONDS, GONE_WITHIN_SECONDS,
               "the connection to sit idle past the ping threshold")
    before = IDLE_PINGS._value.get()
    assert backend_of(web_engine) != killed  # the ping found it dead; the pool connected afresh
    assert IDLE_PINGS._value.get() == before + 1


def test_without_the_ping_that_request_would_have_failed(postgres_url: str, pg_engine: Engine) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pre_ping=False)
    try:
        terminate(pg_engine, backend_of(engine))  # no ping, so no idle threshold to wait out
        with pytest.raises(OperationalError):
            backend_of(engine)
    finally:
        engine.dispose()
