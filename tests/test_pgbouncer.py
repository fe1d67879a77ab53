"""PostgreSQL through PgBouncer in transaction pooling: what breaks, the settings that mend it, and proof.

A private Debian pgbouncer (tests/support/pgbouncer.py: pool_mode = transaction, four server
connections per database) in front of the shared server. Under transaction pooling two
transactions of one client may run on different server connections, so a prepared statement or
a session setting does not follow the client, and LISTEN cannot work at all. The settings:
`DB_TRANSACTION_POOLER=1` (psycopg prepares nothing; no startup options, which PgBouncer
refuses) and `DATABASE_DIRECT_URL` (the relay LISTENs on PostgreSQL itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import OperationalError

from harness import invariants
from harness.designs import TEST_ENV
from harness.outcome import wait_settled
from harness.topology import Topology
from infra.database import make_engine
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key
from tests.conftest import IN_CI
from tests.support.pgbouncer import pgbouncer_binary, running_pgbouncer
from tests.support.redis_topology import redis_topology

pytestmark = [pytest.mark.postgres, pytest.mark.process]

ROOT = Path(__file__).resolve().parent.parent
#: The PostgreSQL tests the suite runs again through PgBouncer (test_the_postgresql_tests_...).
THROUGH_PGBOUNCER = ("tests/test_workflow.py", "tests/test_step_graph.py", "tests/test_direct_send.py",
                     "tests/test_idempotency.py", "tests/test_exchange_atomicity.py",
                     "tests/test_exchange_concurrency.py", "tests/test_idle.py", "tests/test_relay.py",
                     "tests/test_smoke_api.py")
#: The nested run's bound (it takes about 30 s): inside pytest-timeout's 300 s (setup.cfg), so a
#: hang fails this test and kills the nested run, rather than being killed with it still running.
NESTED_RUN_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="module")
def pgbouncer_port() -> Iterator[int]:
    if pgbouncer_binary() is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed (make test installs Debian's pgbouncer)")
        pytest.skip("pgbouncer is not installed (make test installs Debian's pgbouncer)")
    with running_pgbouncer() as port:
        yield port


def through(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_the_default_engine_is_refused_by_pgbouncer_and_the_pooler_setting_is_not(
        postgres_url: str, pgbouncer_port: int) -> None:
    direct = make_url(postgres_url).set(host="127.0.0.1", port=5432).render_as_string(hide_password=False)
    refused = make_engine(through(direct, pgbouncer_port))
    with pytest.raises(OperationalError, match="unsupported startup parameter"), refused.connect() as conn:
        conn.execute(text("SELECT 1"))
    refused.dispose()

    pooled = make_engine(through(direct, pgbouncer_port), transaction_pooler=True, pool_size=8)
    failures: list[BaseException] = []

    def hammer() -> None:  # the same statements, many times, from clients sharing 4 server connections
        try:
            for n in range(40):
                with pooled.begin() as conn:
                    assert conn.execute(text("SELECT :n + 1"), {"n": n}).scalar_one() == n + 1
                    conn.execute(text("SELECT count(*) FROM exchanges WHERE amount > :a"), {"a": n})
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pooled.dispose()
    assert failures == []


@pytest.fixture
def pooled_topology(pg_engine: Engine, postgres_url: str, pgbouncer_port: int, tmp_path: Path) -> Iterator[Topology]:
    direct = make_url(postgres_url).set(host="127.0.0.1", port=5432).render_as_string(hide_password=False)
    env = {**TEST_ENV, "DB_TRANSACTION_POOLER": "1", "DATABASE_DIRECT_URL": direct}
    with redis_topology(pg_engine, through(direct, pgbouncer_port), tmp_path, "pgbouncer", env=env) as topo:
        yield topo


@pytest.mark.redis
@pytest.mark.parametrize("direct_send", ["1", "0"], ids=["web sends first", "relay sends all"])
def test_exchanges_go_through_pgbouncer_web_relay_and_workers_with_the_relay_listening_direct(
        pooled_topology: Topology, direct_send: str) -> None:
    topo = pooled_topology
    topo.settings_env["OUTBOX_DIRECT_SEND"] = direct_send
    customer = create_customer(topo.engine, "Pooled")
    account = open_account(topo.engine, "Pooled", {"CAD": Decimal("1000.00")}, customer_id=customer)
    api_key = issue_api_key(topo.engine, role=Role.CUSTOMER, label="pooled", customer_id=customer)
    bank = topo.start_bank()
    topo.start_web()
    topo.start_worker("a")
    topo.start_relay("r")
    for n in range(20):
        response = requests.post(f"{topo.web_url}/api/exchanges", timeout=10,
                                 json={"account": str(account), "from_currency": "CAD", "to_currency": "USD",
                                       "amount": f"{10 + n}.00"},
                                 headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"pooled-{n}"})
        assert response.status_code == 202, response.text
    assert wait_settled(topo, 60) == {"completed": 20}
    assert len(bank.all_applied()) == 20
    report = invariants.check(topo.engine, bank=bank, settled=True)
    assert report.ok, f"{report}\n{topo.describe()}"


def test_the_postgresql_tests_pass_through_pgbouncer_in_transaction_mode(pgbouncer_port: int) -> None:
    env = {**os.environ, "TEST_PGBOUNCER_URL": f"postgresql+psycopg://postgres@127.0.0.1:{pgbouncer_port}/postgres"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not sqlite",
                          *THROUGH_PGBOUNCER], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=NESTED_RUN_TIMEOUT_SECONDS)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Every one ran (a database it could not reach would have skipped it): its own database,
    # created and migrated directly, then used through PgBouncer.
    assert " passed" in summary and "skipped" not in summary, summary
