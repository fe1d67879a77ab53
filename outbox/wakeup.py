"""Waking the relay when a writer commits: PostgreSQL LISTEN/NOTIFY, with a poll as fallback."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Protocol

import psycopg
from sqlalchemy import Connection, Engine, event, make_url

from outbox.writer import NOTIFY_CHANNEL, WROTE_OUTBOX

log = logging.getLogger("outbox.wakeup")


class Waiter(Protocol):
    def wait(self, timeout_seconds: float) -> bool:
        """Block until woken or `timeout_seconds` pass; True if woken by a notification."""
        ...

    def prepare(self) -> None:
        """Get ready to be woken (connect and LISTEN) before the first batch."""
        ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class PollWaiter:
    """No notifications (SQLite): sleep the poll interval, interruptibly.

    Given the engine of its own process (the embedded mode), a commit on it that wrote an
    outbox message wakes the relay at once, as NOTIFY does on PostgreSQL. Other commits (the
    relay's own batches, heartbeats) do not: an idle system sleeps.
    """

    def __init__(self, engine: Engine | None = None) -> None:
        self._event = threading.Event()
        if engine is not None:
            event.listen(engine, "commit", self._on_commit)
            event.listen(engine, "rollback", self._on_rollback)

    def _on_commit(self, connection: Connection) -> None:
        if connection.info.pop(WROTE_OUTBOX, False):
            self._event.set()

    @staticmethod
    def _on_rollback(connection: Connection) -> None:
        connection.info.pop(WROTE_OUTBOX, None)  # those messages were never written

    def wait(self, timeout_seconds: float) -> bool:
        woken = self._event.wait(timeout_seconds)
        self._event.clear()
        return woken

    def prepare(self) -> None:
        pass

    def interrupt(self) -> None:
        self._event.set()

    def close(self) -> None:
        pass


class ListenWaiter:
    """LISTENs on its own autocommit connection; reconnects when the connection drops."""

    #: Wait this long at most per blocking call, so interrupt() is noticed promptly.
    SLICE_SECONDS = 0.25

    def __init__(self, database: Engine | str) -> None:
        """`database`: the engine whose database to LISTEN on, or its URL (DATABASE_DIRECT_URL when
        the engine goes through a transaction pooler, which cannot hold a LISTEN)."""
        url = (make_url(database) if isinstance(database, str) else database.url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: psycopg.Connection | None = None
        self._interrupted = threading.Event()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def prepare(self) -> None:
        try:
            self._connection()
        except psycopg.Error as error:
            log.warning("cannot LISTEN yet (%s); polling until the database is back", error)

    def wait(self, timeout_seconds: float) -> bool:
        remaining = timeout_seconds
        try:
            conn = self._connection()
            while remaining > 0 and not self._interrupted.is_set():
                slice_seconds = min(remaining, self.SLICE_SECONDS)
                if any(True for _ in conn.notifies(timeout=slice_seconds, stop_after=1)):
                    # Drain what else arrived: one wake-up, however many commits.
                    for _ in conn.notifies(timeout=0):
                        pass
                    return True
                remaining -= slice_seconds
        except psycopg.Error as error:
            log.warning("LISTEN connection lost (%s); polling until it is back", error)
            self.close()
            self._interrupted.wait(remaining)
        self._interrupted.clear()
        return False

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
