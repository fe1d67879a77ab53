"""Engines for PostgreSQL (production) and SQLite (embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from settings import Settings

#: How long a SQLite writer waits for the lock before failing (embedded mode has
#: web, relay and worker threads writing to one file).
SQLITE_BUSY_TIMEOUT_MS = 10_000


#: See Settings.db_idle_in_transaction_timeout_ms. Caveat (PostgreSQL 15): a protocol Flush
#: after a statement disarms the timer until the next statement, and psycopg ends every
#: executemany with one; so a transaction that must stay protected writes several rows with
#: one multi-row statement (services/ledger.post).
IDLE_IN_TRANSACTION_TIMEOUT_MS: int = Settings.db_idle_in_transaction_timeout_ms


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    idle_in_transaction_timeout_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS,
    pre_ping: bool = True,
    **kwargs: Any,
) -> Engine:
    """An engine for `url`.

    `pre_ping` checks each connection at checkout (one more round trip and transaction on
    PostgreSQL): the web keeps it, so a failover costs no request an error. Relays and
    workers turn it off: a dead connection fails one batch or one step, which they retry.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    options = f"-c idle_in_transaction_session_timeout={idle_in_transaction_timeout_ms}"
    return create_engine(
        url,
        connect_args={"options": options},
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A connection killed by a failover or pg_terminate_backend is noticed at
        # checkout instead of failing the next request.
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        **kwargs,
    )


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can
        # then never fail half-way with SQLITE_BUSY, which is SQLite's FOR UPDATE.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
