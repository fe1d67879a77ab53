"""Engines for PostgreSQL (production) and SQLite (embedded default)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from settings import Settings

#: How long a SQLite writer waits for the lock before failing (embedded mode has
#: web, relay and worker threads writing to one file).
SQLITE_BUSY_TIMEOUT_MS = 10_000


#: See Settings.db_idle_in_transaction_timeout_ms. Caveat (PostgreSQL 15): a protocol Flush
#: after a statement disarms the timer until the next statement, and psycopg ends every
#: executemany with one; so a transaction that must stay protected writes several rows with
#: one multi-row statement (services/ledger.post).
IDLE_IN_TRANSACTION_TIMEOUT_MS: int = Settings.db_idle_in_transaction_timeout_ms

#: See Settings.db_connect_timeout_seconds and Settings.db_tcp_user_timeout_ms.
CONNECT_TIMEOUT_SECONDS: int = Settings.db_connect_timeout_seconds
TCP_USER_TIMEOUT_MS: int = Settings.db_tcp_user_timeout_ms
#: Unanswered keepalive probes before the kernel drops a silent connection.
KEEPALIVE_PROBES = 3

#: SQLSTATEs (prefixes) of a server, or PgBouncer, that cannot serve the connection: connection
#: exceptions (08: PgBouncer's own errors too), operator intervention (57P: shutdown, cannot connect
#: now), too many connections. Not deadlocks, serialization failures or lock timeouts: those are
#: OperationalError too, but the database answered.
UNREACHABLE_SQLSTATES = ("08", "57P", "53300")
#: SQLite's counterparts: the file cannot be opened, or its lock was not had within the busy timeout.
UNREACHABLE_SQLITE_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_BUSY")

#: A pooled connection unused for this long is checked before it is handed out.
PING_IDLE_AFTER_SECONDS = 1.0

IDLE_PINGS = Counter("fx_db_idle_pings", "Pooled connections checked at checkout because they had been idle")


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    idle_in_transaction_timeout_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS,
    pre_ping: bool = True,
    transaction_pooler: bool = False,
    connect_timeout_seconds: int = CONNECT_TIMEOUT_SECONDS,
    tcp_user_timeout_ms: int = TCP_USER_TIMEOUT_MS,
    **kwargs: Any,
) -> Engine:
    """An engine for `url`.

    `pre_ping` checks a connection at checkout when it has been idle in the pool for
    PING_IDLE_AFTER_SECONDS: after a failover, that is every connection, so the failover costs
    no request an error. A connection in constant use is not pinged (SQLAlchemy's own pre-ping
    would cost a round trip and a transaction per checkout, twice a POST); if the database dies
    under load, one statement fails, SQLAlchemy drops the whole pool, and the next checkout
    connects afresh. Relays and workers turn it off: a dead connection fails one batch or one
    step, which they retry.

    Behind a pooler in transaction mode (`transaction_pooler`, PgBouncer), consecutive
    transactions may run on different server connections: psycopg must not prepare statements
    (PgBouncer before 1.21 cannot route them), and nothing may rely on session state, so the
    startup option is not sent (PgBouncer refuses unknown startup parameters). The socket's
    timeouts (`network_timeouts`) are the client's own, sent either way.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    connect_args: dict[str, Any] = (
        {"prepare_threshold": None} if transaction_pooler
        else {"options": f"-c idle_in_transaction_session_timeout={idle_in_transaction_timeout_ms}"})
    connect_args.update(network_timeouts(connect_timeout_seconds, tcp_user_timeout_ms))
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        **kwargs,
    )
    if pre_ping:
        _ping_when_idle(engine, PING_IDLE_AFTER_SECONDS)
    return engine


def network_timeouts(connect_timeout_seconds: int, tcp_user_timeout_ms: int) -> dict[str, int]:
    """libpq parameters that give up on a dead network: connecting waits `connect_timeout_seconds`
    at most, and an established connection whose peer falls silent (sent data unacknowledged, or
    keepalive probes unanswered while it waits for an answer) is dropped after about
    `tcp_user_timeout_ms`. Without them a partition leaves the thread blocked in recv() for the
    kernel's ~15 minutes of TCP retransmissions, holding its pooled connection and its request.
    `tcp_user_timeout_ms` 0 leaves the socket to the OS defaults."""
    options = {"connect_timeout": connect_timeout_seconds}
    if tcp_user_timeout_ms > 0:
        # Probes start halfway through and all fit in the rest: idle + count * interval <= the timeout.
        idle_seconds = max(1, tcp_user_timeout_ms // 2000)
        interval_seconds = max(1, tcp_user_timeout_ms // (2000 * KEEPALIVE_PROBES))
        options.update(tcp_user_timeout=tcp_user_timeout_ms, keepalives=1, keepalives_idle=idle_seconds,
                       keepalives_interval=interval_seconds, keepalives_count=KEEPALIVE_PROBES)
    return options


def is_unreachable(error: BaseException) -> bool:
    """True when `error` says the database could not be reached or the connection was lost, not
    that the database answered and refused the statement. (A connection lost during COMMIT leaves
    the outcome unknown: the caller retries idempotently.)"""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith(UNREACHABLE_SQLSTATES)
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    return sqlite_error is None or sqlite_error in UNREACHABLE_SQLITE_ERRORS  # None: the client's own failure


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's pessimistic disconnect handling (a checkout event raising DisconnectionError,
    which makes the pool connect afresh), for connections that sat idle: those a failover or
    pg_terminate_backend killed while nobody used them."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["fx.idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("fx.idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # fresh, or in constant use
        IDLE_PINGS.inc()
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()
        except Exception as error:  # the driver's own error: the connection is gone
            raise DisconnectionError(f"a pooled connection idle for {idle_seconds} s is gone: {error}") from error


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


def single_read(engine: Engine) -> Connection:
    """A connection for one read statement: on PostgreSQL in autocommit, so no BEGIN and no
    ROLLBACK round trip wrap it (the API key check on every request)."""
    conn = engine.connect()
    if is_postgres(engine):
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def insert_on_conflict(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` that takes ON CONFLICT, in the connection's dialect (both have it)."""
    return insert_on_conflict_in(conn.dialect.name, table)


def insert_on_conflict_in(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """`insert_on_conflict` for a dialect by name: for statements built once per dialect."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
