"""The running relay: LISTEN/NOTIFY wake-ups, the loop's stop, and the daemon's graceful exit.

Every wait below is bounded by a deadline and asserts what happened (a wake-up, a
published row, an exit code), never how long it took. Where a notification could be
missed because LISTEN was not yet in place, the test first waits until PostgreSQL
shows the listening connection.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, select, text

from harness.waits import wait_until
from infra.database import is_postgres, make_engine
from models import outbox_messages
from outbox import writer
from outbox.publisher import BrokerPublisher, Publisher
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from tests.conftest import REDIS_URL

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ACTOR = "convert"
#: Far longer than any wake-up needs: returning before it proves a notification woke us.
LONG_WAIT_SECONDS = 30.0
#: Bound on waiting for an outcome, shorter than LONG_WAIT_SECONDS so a poll cannot pass for a wake-up.
DEADLINE_SECONDS = 20.0


def tagged(engine: Engine) -> Engine:
    """The same database under an application_name of its own, so its LISTEN can be told
    apart in pg_stat_activity from one a previous test has closed but PostgreSQL still shows."""
    url = engine.url.update_query_dict({"application_name": f"relay-test-{uuid.uuid4().hex[:12]}"})
    return make_engine(url.render_as_string(hide_password=False))


@pytest.fixture
def listening_engine(pg_engine: Engine) -> Iterator[Engine]:
    engine = tagged(pg_engine)
    yield engine
    engine.dispose()


@pytest.fixture
def listen_waiter(listening_engine: Engine) -> Iterator[ListenWaiter]:
    waiter = ListenWaiter(listening_engine)
    yield waiter
    waiter.close()


def write(engine: Engine, queue: str, payload: dict[str, Any] | None = None) -> uuid.UUID:
    with engine.begin() as conn:
        return writer.enqueue(conn, actor=ACTOR, payload=payload or {"n": 1}, queue=queue)


def is_published(engine: Engine, message_id: uuid.UUID) -> bool:
    with engine.connect() as conn:
        return conn.execute(
            select(outbox_messages.c.published_at.is_not(None)).where(outbox_messages.c.id == message_id)
        ).scalar_one()


def listener_pids(engine: Engine) -> set[int]:
    """Backends under `engine`'s application_name (see `tagged`) that LISTEN for the outbox:
    their last statement was the LISTEN."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = :name AND query = :listen"
                ),
                {"name": engine.url.query["application_name"], "listen": f"LISTEN {writer.NOTIFY_CHANNEL}"},
            ).scalars()
        )


class InThread:
    """Run `target` in a thread and keep its exception, so a failure there fails the test."""

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as error:
            self.error = error

    def join(self) -> None:
        self.thread.join(DEADLINE_SECONDS)
        assert not self.thread.is_alive(), f"{self.thread.name} is still running"
        if self.error is not None:
            raise self.error


def test_listen_waiter_wakes_when_another_connection_commits_an_outbox_insert(
    pg_engine: Engine, listen_waiter: ListenWaiter, queue: str
) -> None:
    assert listen_waiter.wait(0.01) is False  # connects and LISTENs

    def insert_while_it_waits() -> None:
        time.sleep(0.2)  # most likely mid-wait; either way LISTEN is in place, so it is not missed
        write(pg_engine, queue)

    writer_thread = InThread(insert_while_it_waits, "writer")
    woken = listen_waiter.wait(LONG_WAIT_SECONDS)
    writer_thread.join()

    assert woken is True, "the wait timed out instead of being woken by the commit"


def test_listen_waiter_returns_false_when_nothing_is_written_before_the_timeout(
    listen_waiter: ListenWaiter,
) -> None:
    assert listen_waiter.wait(0.5) is False


def test_listen_waiter_is_not_woken_by_a_rolled_back_insert(
    pg_engine: Engine, listen_waiter: ListenWaiter, queue: str
) -> None:
    assert listen_waiter.wait(0.01) is False
    with pg_engine.connect() as conn:
        writer.enqueue(conn, actor=ACTOR, payload={"n": 1}, queue=queue)
        conn.rollback()

    assert listen_waiter.wait(0.5) is False


def test_listen_waiter_listens_again_after_its_connection_is_terminated(
    pg_engine: Engine,
    listening_engine: Engine,
    listen_waiter: ListenWaiter,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert listen_waiter.wait(0.01) is False
    [killed] = listener_pids(listening_engine)
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}).scalar_one()

    with caplog.at_level(logging.WARNING, logger="outbox.wakeup"):
        wait_until(
            lambda: listen_waiter.wait(0.1) is False and "LISTEN connection lost" in caplog.text,
            DEADLINE_SECONDS,
            "the waiter to notice its connection is gone",
        )

    def insert_once_it_listens_again() -> None:
        wait_until(lambda: listener_pids(listening_engine) - {killed}, DEADLINE_SECONDS, "a new LISTEN connection")
        write(pg_engine, queue)

    writer_thread = InThread(insert_once_it_listens_again, "writer")
    woken = listen_waiter.wait(LONG_WAIT_SECONDS)
    writer_thread.join()

    assert woken is True, "the waiter did not LISTEN again after losing its connection"


@contextmanager
def relay_running(engine: Engine, publisher: Publisher) -> Iterator[Relay]:
    """`Relay.run()` in a thread, listening for work once this yields; stopped and joined on exit.

    PostgreSQL: LISTEN, with a poll too slow to pass for a wake-up. SQLite: a quick poll.
    """
    waiter: Waiter
    if is_postgres(engine):
        listening = tagged(engine)
        waiter, config = ListenWaiter(listening), RelayConfig(poll_interval_seconds=LONG_WAIT_SECONDS)
    else:
        listening = None
        waiter, config = PollWaiter(), RelayConfig(poll_interval_seconds=0.05)
    relay = Relay(engine, publisher, config, waiter=waiter)
    loop = InThread(relay.run, "relay")
    try:
        if listening is not None:
            wait_until(lambda: listener_pids(listening), DEADLINE_SECONDS, "the relay to LISTEN")
        yield relay
    finally:
        relay.stop()
        loop.join()
        waiter.close()
        if listening is not None:
            listening.dispose()


def test_a_running_relay_publishes_a_message_written_after_it_started_and_stops_on_request(
    engine: Engine, queue: str
) -> None:
    broker = StubBroker(middleware=[])
    broker.declare_queue(queue)

    with relay_running(engine, BrokerPublisher(broker)) as relay:
        message_id = write(engine, queue, {"n": 42})
        wait_until(lambda: is_published(engine, message_id), DEADLINE_SECONDS, "the relay to publish the new row")

    [message] = [Message.decode(data) for data in broker.queues[queue].queue]
    assert (message.message_id, message.kwargs) == (str(message_id), {"n": 42})
    assert relay.totals["published"] == 1


def test_stop_ends_a_relay_that_is_waiting_for_work(engine: Engine) -> None:
    with relay_running(engine, BrokerPublisher(StubBroker(middleware=[]))) as relay:
        pass  # started, caught up with an empty outbox, and waiting

    assert relay.totals == {"published": 0, "failed_batches": 0, "purged": 0}


def daemon_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"FX_FAILPOINTS", "SENTRY_DSN", "REDIS_URL"}}
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL=REDIS_URL,
        LOG_LEVEL="INFO",
        # Only a NOTIFY can explain a prompt publish of a row written while it runs.
        RELAY_POLL_INTERVAL_SECONDS=str(LONG_WAIT_SECONDS),
        RELAY_METRICS_PORT="0",
    )
    return env


@pytest.mark.process
def test_the_relay_daemon_publishes_and_exits_cleanly_on_sigterm(
    pg_engine: Engine, listening_engine: Engine, redis_client: redis.Redis, queue: str, tmp_path: Path
) -> None:
    before_start = write(pg_engine, queue, {"n": 1})
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "relay", "run"],
            cwd=PROJECT_ROOT,
            env=daemon_env(listening_engine.url.render_as_string(hide_password=False)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def published(message_id: uuid.UUID) -> bool:
            assert daemon.poll() is None, f"the daemon exited early:\n{log_path.read_text()}"
            return is_published(pg_engine, message_id)

        wait_until(lambda: published(before_start), DEADLINE_SECONDS, "the daemon to publish the backlog")
        wait_until(lambda: listener_pids(listening_engine), DEADLINE_SECONDS, "the daemon to LISTEN")
        while_running = write(pg_engine, queue, {"n": 2})
        wait_until(lambda: published(while_running), DEADLINE_SECONDS,
                   "the daemon to publish a row written while it runs")

        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(timeout=DEADLINE_SECONDS)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    log = log_path.read_text()
    assert exit_code == 0, log
    assert "received SIGTERM" in log and "stopped after publishing 2 messages" in log, log
    messages = {Message.decode(data).message_id for data in redis_client.hvals(f"dramatiq:{queue}.msgs")}
    assert messages == {str(before_start), str(while_running)}
