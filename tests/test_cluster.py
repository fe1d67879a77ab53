"""The system across hosts, CI-sized (bench/cluster/): network namespaces, PgBouncer, a 3-node RabbitMQ cluster.

One run of `python -m bench.cluster` with two of its faults: worker1 cut off from PostgreSQL
and PgBouncer while its credits sit between the bank's answer and their commit, then kill -9
of the RabbitMQ node leading the queue. Only invariants are asserted, never how long anything
took. It needs root, iptables, rabbitmq-server, pgbouncer and PostgreSQL's server binaries:
without them it skips with the reason, and in CI it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from bench.cluster.cli import cannot_run
from harness.netns import PREFIX, sh
from harness.processes import PROJECT_ROOT
from tests.conftest import IN_CI

#: Seconds the run may take at most (it takes about 70): a hang fails, it does not block CI.
RUN_TIMEOUT_SECONDS = 600
#: pytest-timeout's bound on the test that sets the run up: past the run's own bound and its
#: SIGTERM clean-up, so the run always gets to remove its namespaces.
PYTEST_TIMEOUT_SECONDS = RUN_TIMEOUT_SECONDS + 120

# Serial: three RabbitMQ nodes, a PostgreSQL and twelve roles need the machine to themselves.
pytestmark = [pytest.mark.process, pytest.mark.netns, pytest.mark.serial,
              pytest.mark.timeout(PYTEST_TIMEOUT_SECONDS)]


def require_machine() -> None:
    missing = cannot_run()
    if missing:
        message = f"the cluster run needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str, int]:
    require_machine()
    report = tmp_path_factory.mktemp("cluster") / "report.json"
    process = subprocess.Popen([sys.executable, "-m", "bench.cluster", "--faults", "worker-postgres,broker-leader",
                                "--warmup", "10", "--rate", "6", "--json", str(report)], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.terminate()  # it removes its namespaces on SIGTERM
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"the cluster run did not end within {RUN_TIMEOUT_SECONDS} s:\n{output[-4000:]}")
    data = json.loads(report.read_text()) if report.exists() else {}
    return process.returncode, data, output, process.pid


def test_a_worker_cut_from_postgres_mid_credit_and_a_killed_broker_leader_lose_and_double_nothing(
        cluster_run: tuple[int, dict, str, int]) -> None:
    returncode, data, output, _ = cluster_run
    assert data, f"no report:\n{output[-4000:]}"
    assert returncode == 0, output[-4000:]
    assert data["accepted"] > 0 and data["recorded"] == data["accepted"]
    assert data["lost"] == 0 and data["doubled"] == {} and data["bank_doubles"] == 0
    assert all(Decimal(total) == 0 for total in data["ledger_sums"].values())
    assert data["non_terminal"] == 0 and data["unpublished"] == 0 and data["negative_balances"] == 0
    assert data["violations"] == []
    assert data["states"] == {"completed": data["recorded"]}


def test_both_faults_were_applied_under_load_and_every_exchange_ended_after_each_heal(
        cluster_run: tuple[int, dict, str, int]) -> None:
    _, data, output, _ = cluster_run
    phases = {p["name"]: p for p in data.get("phases", [])}
    assert list(phases) == ["worker-postgres", "broker-leader"], output[-4000:]
    assert all(p["accepted"] == p["posted"] > 0 and p["quiesced"] for p in phases.values())
    assert any(note.startswith("killed mq") for note in phases["broker-leader"]["notes"])


def test_the_run_removes_every_namespace_it_made(cluster_run: tuple[int, dict, str, int]) -> None:
    _, _, _, pid = cluster_run
    left = [ns for ns in sh("ip", "netns", "list").split() if ns.startswith(f"{PREFIX}{pid}-")]
    assert left == []


def test_each_role_ran_on_a_host_of_its_own(cluster_run: tuple[int, dict, str, int]) -> None:
    _, _, output, pid = cluster_run
    for host in ("postgres", "pgbouncer", "mq1", "mq2", "mq3", "web1", "web2", "relay1", "relay2", "worker1",
                 "worker2", "reconciler", "bank"):
        assert f"ip netns exec {PREFIX}{pid}-{host} " in output, host
