"""A CI-sized chaos run (bench/chaos/): the real topology as separate processes, under fire.

150 exchanges through gunicorn while relays and workers are killed with kill -9 and
restarted, the bank times out after applying (20 %) or answers 503 (5 %), the private
redis-server is killed and restarted once, and every PostgreSQL connection of the topology
is terminated twice. Only the invariants are asserted, never how long anything took.
"""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import create_engine, text

from bench import chaos

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_servers() -> None:
    """PostgreSQL and the redis-server binary; missing ones fail in CI and skip elsewhere."""
    problem = None
    if shutil.which("redis-server") is None:
        problem = "redis-server is not installed (the run starts a private one)"
    else:
        admin = create_engine(POSTGRES_ADMIN_URL)
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as error:
            problem = f"PostgreSQL is not reachable: {error}"
        finally:
            admin.dispose()
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)


def test_exchanges_survive_kills_bank_faults_a_redis_restart_and_dropped_connections(
        capsys: pytest.CaptureFixture[str]) -> None:
    require_servers()
    args = chaos.parse_args([
        "--exchanges", "150", "--accounts", "4", "--fault-seconds", "15", "--kill-every", "2.5",
        "--redis-restart-at", "5", "--pg-terminations", "2", "--seed", "7", "--postgres-url", POSTGRES_ADMIN_URL,
    ])
    plan = chaos.plan_from(args)

    outcome = chaos.run_design("outbox", args, plan)

    chaos.print_report([outcome], args, plan)
    report = capsys.readouterr().out  # in every assertion's message
    assert outcome.faults["kill -9 relay"] + outcome.faults["kill -9 worker"] >= 3, report
    assert outcome.faults["kill -9 redis-server, restart"] == 1, report
    assert outcome.accepted == 150, report
    assert outcome.lost == [], report
    assert outcome.quiesced, report
    assert not outcome.doubled and outcome.bank_doubles == 0, report
    assert outcome.negative_balances == 0 and all(v == 0 for v in outcome.ledger_sums.values()), report
    assert outcome.non_terminal == 0 and outcome.unpublished == 0, report
    assert outcome.violations == [], report
    assert outcome.ok, report
