"""A database the web cannot reach: connections give up instead of hanging, and the API answers
503 with Retry-After instead of 500.

The socket options are checked twice: in the parameters handed to psycopg (no server needed), and
on a real connection's socket, where the kernel holds them (through PgBouncer when the run uses it).
"""

from __future__ import annotations

import logging
import socket
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, InternalError, OperationalError

import bootstrap
import services.exchanges
from app import create_app
from harness.net import free_private_port
from infra.database import is_unreachable, make_engine
from settings import Settings
from tests.conftest import PGBOUNCER_URL
from web import errors

UNAVAILABLE_BODY = {"error": {"code": "database_unavailable", "message": (
    "The database could not be reached. Retry with the same Idempotency-Key: a request that did get "
    "through is not applied twice.")}}
#: What make_engine sends by default: connect in 5 s, drop a silent peer after 10 s (probes at 5, 6, 7 s).
NETWORK_TIMEOUTS = {"connect_timeout": 5, "tcp_user_timeout": 10_000, "keepalives": 1, "keepalives_idle": 5,
                    "keepalives_interval": 1, "keepalives_count": 3}
EXCHANGE = {"from_currency": "CAD", "to_currency": "USD", "amount": "10.00"}


class Captured(Exception):
    """Raised where the engine would connect: the parameters were seen, no server was needed."""


def connect_params(engine: Engine) -> dict[str, Any]:
    """The keyword arguments the engine hands the driver's connect()."""
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def _capture(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise Captured

    with pytest.raises(Captured):
        engine.connect()
    engine.dispose()
    return seen


POSTGRES_URL = "postgresql+psycopg://fx@db.invalid:5432/fx"


def test_a_postgresql_engine_sends_the_connect_timeout_and_the_socket_timeouts() -> None:
    params = connect_params(make_engine(POSTGRES_URL))
    assert {k: params[k] for k in NETWORK_TIMEOUTS} == NETWORK_TIMEOUTS
    assert params["options"] == "-c idle_in_transaction_session_timeout=15000"


def test_behind_a_transaction_pooler_the_socket_timeouts_are_sent_too() -> None:
    params = connect_params(make_engine(POSTGRES_URL, transaction_pooler=True))
    assert {k: params[k] for k in NETWORK_TIMEOUTS} == NETWORK_TIMEOUTS
    assert params["prepare_threshold"] is None
    assert "options" not in params  # PgBouncer refuses startup options, not client-side socket ones


def test_a_tcp_user_timeout_of_0_leaves_the_socket_to_the_os_but_still_bounds_the_connect() -> None:
    params = connect_params(make_engine(POSTGRES_URL, connect_timeout_seconds=2, tcp_user_timeout_ms=0))
    assert params["connect_timeout"] == 2
    assert not {"tcp_user_timeout", "keepalives", "keepalives_idle"} & params.keys()


def test_the_keepalive_probes_fit_in_the_tcp_user_timeout() -> None:
    params = connect_params(make_engine(POSTGRES_URL, tcp_user_timeout_ms=30_000))
    probing_seconds = params["keepalives_idle"] + params["keepalives_count"] * params["keepalives_interval"]
    assert (params["tcp_user_timeout"], params["keepalives_idle"], params["keepalives_interval"]) == (30_000, 15, 5)
    assert probing_seconds <= 30


def test_sqlite_gets_no_network_parameters(tmp_path: Any) -> None:
    params = connect_params(make_engine(f"sqlite:///{tmp_path / 'fx.db'}"))
    assert "connect_timeout" not in params
    assert params["check_same_thread"] is False


@pytest.mark.parametrize("role", list(bootstrap.Role))
def test_every_role_s_engine_takes_the_timeouts_from_the_settings(role: bootstrap.Role) -> None:
    settings = Settings.from_env({"DATABASE_URL": POSTGRES_URL, "DB_CONNECT_TIMEOUT_SECONDS": "3",
                                  "DB_TCP_USER_TIMEOUT_MS": "20000"})
    params = connect_params(bootstrap.build_engine(settings, role))  # the relay's own small pool included
    assert (params["connect_timeout"], params["tcp_user_timeout"], params["keepalives_idle"]) == (3, 20_000, 10)


@pytest.mark.postgres
def test_a_real_connection_s_socket_carries_the_timeouts(postgres_url: str) -> None:
    engine = make_engine(postgres_url, transaction_pooler=bool(PGBOUNCER_URL))
    try:
        with engine.connect() as conn:
            dbapi_connection = conn.connection.dbapi_connection
            assert isinstance(dbapi_connection, psycopg.Connection)
            with socket.socket(fileno=socket.dup(dbapi_connection.pgconn.socket)) as sock:
                options = {name: sock.getsockopt(level, option) for name, level, option in [
                    ("tcp_user_timeout", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                    ("keepalives", socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    ("keepalives_idle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    ("keepalives_interval", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    ("keepalives_count", socket.IPPROTO_TCP, socket.TCP_KEEPCNT)]}
    finally:
        engine.dispose()
    assert options == {k: v for k, v in NETWORK_TIMEOUTS.items() if k != "connect_timeout"}


@pytest.fixture
def unreachable_client() -> Iterator[FlaskClient]:
    """The web app on a PostgreSQL URL whose port nothing listens on: every connect is refused."""
    url = f"postgresql+psycopg://fx@127.0.0.1:{free_private_port()}/fx"
    app = create_app(Settings(database_url=url, api_rate_limit="1000 per minute",
                              unverified_rate_limit="1000 per minute"))
    yield app.test_client()
    app.extensions["fx.engine"].dispose()


def test_an_unreachable_database_answers_503_with_retry_after_and_the_error_body(
        unreachable_client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    before = errors.DATABASE_UNAVAILABLE._value.get()
    with caplog.at_level(logging.WARNING, logger=errors.__name__):
        response = unreachable_client.post(
            "/api/exchanges", json={"account": "3f1c0000-0000-4000-8000-000000000000", **EXCHANGE},
            headers={"Authorization": "Bearer fxk_0123456789_secret", "Idempotency-Key": "k-1"})  # a well-formed key
    assert response.status_code == 503
    assert response.get_json() == UNAVAILABLE_BODY
    assert response.headers["Retry-After"] == str(errors.DATABASE_RETRY_AFTER_SECONDS) == "1"
    assert errors.DATABASE_UNAVAILABLE._value.get() == before + 1
    [record] = [r for r in caplog.records if r.name == errors.__name__]
    assert record.levelno == logging.WARNING and record.exc_info is None  # one line, no traceback
    assert "OperationalError (psycopg.OperationalError): connection failed" in record.getMessage()
    assert "\n" not in record.getMessage()


def _lost(statement: str = "INSERT INTO exchanges ...") -> list[DBAPIError]:
    server_gone = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    return [
        OperationalError(statement, {}, Exception("connection timed out")),
        OperationalError(statement, {}, server_gone, connection_invalidated=True),
        InterfaceError(statement, {}, psycopg.InterfaceError("the connection is closed")),
        InternalError(statement, {}, psycopg.errors.IdleInTransactionSessionTimeout("terminating connection"),
                      connection_invalidated=True),
        OperationalError(statement, {}, psycopg.errors.AdminShutdown("terminating connection due to admin")),
        OperationalError(statement, {}, psycopg.errors.ProtocolViolation("query_wait_timeout")),  # PgBouncer
    ]


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize("lost", _lost(), ids=lambda e: f"{type(e).__name__}-{type(e.orig).__name__}")
def test_a_connection_lost_mid_request_answers_503_and_is_counted(
        client: FlaskClient, funded_account: Any, monkeypatch: pytest.MonkeyPatch, lost: DBAPIError) -> None:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise lost

    monkeypatch.setattr(services.exchanges, "create_exchange", fail)
    before = errors.DATABASE_UNAVAILABLE._value.get()
    response = client.post("/api/exchanges", json={"account": str(funded_account), **EXCHANGE},
                           headers={"Idempotency-Key": "lost-1"})
    assert (response.status_code, response.get_json()) == (503, UNAVAILABLE_BODY)
    assert response.headers["Retry-After"] == "1"
    assert errors.DATABASE_UNAVAILABLE._value.get() == before + 1


def _sqlite_error(sql: str) -> sqlite3.OperationalError:
    try:
        sqlite3.connect(":memory:").execute(sql)
    except sqlite3.OperationalError as error:
        return error
    raise AssertionError(f"{sql!r} did not fail")


@pytest.mark.parametrize("error", [
    OperationalError("UPDATE balances ...", {}, psycopg.errors.DeadlockDetected("deadlock detected")),
    OperationalError("UPDATE balances ...", {}, psycopg.errors.SerializationFailure("could not serialize")),
    OperationalError("SELECT ... FOR UPDATE", {}, psycopg.errors.LockNotAvailable("lock timeout")),
    OperationalError("SELECT * FROM nope", {}, _sqlite_error("SELECT * FROM nope")),
    IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key")),
    RuntimeError("not the database"),
], ids=lambda e: type(getattr(e, "orig", e)).__name__)
def test_an_error_the_database_answered_with_is_not_an_outage(error: Exception) -> None:
    assert not is_unreachable(error)  # the web still answers it 500 internal_error, with its traceback logged
