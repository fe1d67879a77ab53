"""Fixtures per backend: a fresh PostgreSQL database per test worker, a SQLite file, Redis.

Tests run side by side (pytest-xdist, `make test`): each worker has its own PostgreSQL
database, its own Redis database, queue names of its own (tests.support.outbox_rows.unique_queue)
and its own share of the private ports (harness.net). A test that starts a process, a browser
or network namespaces says so with its marker (`process`, `browser`, `netns`: setup.cfg), so
that `make test-fast` can leave it out; one that starts a process unmarked fails.

A test that needs a server fails in CI (CI=true) when the server is missing, and is
skipped with the reason on a developer's machine.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app import create_app
from harness.slots import current_slot
from infra import migrate
from infra.database import make_engine
from models import Base
from services.accounts import HOUSE_ACCOUNT_ID, open_account
from services.credentials import Role, create_customer, issue_api_key
from services.workflow import Workflow
from settings import Settings

#: Fixtures shared by the relay tests (a queue of their own on the relay's Redis database).
pytest_plugins = ["tests.support.relay_redis", "tests.support.ops_client", "tests.support.zombies",
                  "tests.support.sentry_capture"]

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: This worker's slot among the parallel test workers (gw0, gw1, ...; "main" without xdist).
SLOT = current_slot()
#: Redis keeps 16 databases: 1-15 are the test workers' (0 is left to whoever runs by hand).
REDIS_TEST_DATABASES = 15
REDIS_URL = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))._replace(
    path=f"/{1 + SLOT.index % REDIS_TEST_DATABASES}").geturl()
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


#: The markers of tests that start processes of their own (setup.cfg says what each means).
PROCESS_MARKERS = ("process", "browser", "netns")


@contextmanager
def processes_refused_unless_marked(item: pytest.Item) -> Iterator[list[str]]:
    """While an unmarked test sets up, runs and tears down (its module's and session's fixtures
    included), starting a process raises; the commands tried are listed for the hook to fail on."""
    started: list[str] = []
    if any(item.get_closest_marker(name) for name in PROCESS_MARKERS):
        yield started
        return
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen, args: object, *_: object, **__: object) -> None:
        started.append(repr(args)[:200])
        raise RuntimeError(f"this test starts a process ({started[-1]}): mark it `process`")

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield started
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]


def _refusing_processes(item: pytest.Item) -> Iterator[None]:
    with processes_refused_unless_marked(item) as started:
        yield
    if started:  # even where the code under test swallowed the error
        pytest.fail(f"started a process without the `process` marker: {started}")


# `make test-fast` chooses its tests by these markers: an unmarked test that starts a process
# fails in the phase that started it (a module's fixtures start in its first test's set-up).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _refusing_processes(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _refusing_processes(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield from _refusing_processes(item)


def unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


#: `TEST_PGBOUNCER_URL=postgresql+psycopg://postgres@127.0.0.1:PORT`: the PostgreSQL tests reach their
#: database through that PgBouncer (transaction pooling, every database name mapped to the shared
#: server), as production behind a pooler does (DB_TRANSACTION_POOLER; migrations and LISTEN direct).
PGBOUNCER_URL = os.environ.get("TEST_PGBOUNCER_URL", "")


@pytest.fixture(scope="session", autouse=True)
def each_password_hashed_once() -> Iterator[None]:
    """scrypt costs 0.1 s of CPU per hash by design, and the suite makes a thousand customers with
    a few passwords: each password is hashed once per worker. What is stored is still a real
    scrypt hash, checked at sign-in as in production; only its salt repeats between tests."""
    from services import credentials

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(credentials, "generate_password_hash", functools.cache(credentials.generate_password_hash))
        yield


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this run's own, created and migrated here, dropped at the end (through
    TEST_PGBOUNCER_URL, if set, once it is migrated)."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"fx_test_{SLOT.name}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        admin.dispose()
        unavailable("PostgreSQL", error)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    if PGBOUNCER_URL:
        pooled = make_url(PGBOUNCER_URL)
        url = make_url(url).set(host=pooled.host, port=pooled.port).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "fx.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def wipe(engine: Engine) -> None:
    """Empty every table but keep the house account the migration created."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "accounts":
                conn.execute(table.delete().where(table.c.id != HOUSE_ACCOUNT_ID))
            else:
                conn.execute(table.delete())
        # Deleting the exchanges counted them out (the PostgreSQL trigger): start from nothing.
        conn.execute(Base.metadata.tables["exchange_state_deltas"].delete())
        conn.execute(Base.metadata.tables["exchange_state_counts"].delete())


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url, pool_size=60, max_overflow=10, transaction_pooler=bool(PGBOUNCER_URL))
    wipe(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    wipe(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """The same test on both backends."""
    fixture = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    return request.getfixturevalue(fixture)


def settings_for(engine: Engine, **overrides: object) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    if PGBOUNCER_URL and url.startswith("postgresql"):
        admin = make_url(POSTGRES_ADMIN_URL)
        direct = make_url(url).set(host=admin.host, port=admin.port).render_as_string(hide_password=False)
        overrides = {"db_transaction_pooler": True, "database_direct_url": direct, **overrides}
    return Settings(database_url=url, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def app_settings() -> dict[str, object]:
    """Settings the `app` fixture's application gets besides the database (a module overrides it)."""
    return {}


@pytest.fixture
def app(engine: Engine, app_settings: dict[str, object]) -> Flask:
    application = create_app(settings_for(engine, **app_settings))
    # Share the fixture's engine so tests see the same connections and pool.
    application.extensions["fx.engine"].dispose()
    application.extensions["fx.engine"] = engine
    return application


@dataclass(frozen=True)
class ApiCustomer:
    id: uuid.UUID
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def customer(engine: Engine) -> ApiCustomer:
    """A customer with an API key; `client` calls the API as this customer."""
    customer_id = create_customer(engine, "Test Customer", email="test@example.com", password="test-password")
    return ApiCustomer(customer_id, issue_api_key(engine, role=Role.CUSTOMER, label="tests", customer_id=customer_id))


@pytest.fixture
def client(app: Flask, customer: ApiCustomer) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = customer.headers["Authorization"]
    return client


@pytest.fixture
def anonymous_client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def funded_account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Test Customer", {"CAD": Decimal("1000.00"), "USD": Decimal("50.00")},
                        customer_id=customer.id)


@pytest.fixture
def bank_url(tmp_path: Path) -> Iterator[str]:
    """The real bank service over HTTP, in a thread, with its own SQLite file."""
    from tests.workflow_support import bank_server

    with bank_server(tmp_path) as url:
        yield url


@pytest.fixture
def wf(engine: Engine, bank_url: str) -> Workflow:
    """The workflow on this test's engine and bank: 5 s leases, 3 credit attempts."""
    from tests.ops_support import make_workflow

    return make_workflow(engine, bank_url)
