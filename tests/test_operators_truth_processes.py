"""The failures an operator must see, on the real topology: worker, relay and reconciler processes,
the bank service, PostgreSQL and Redis. Each failure is injected, its signal read where an operator
reads it (/metrics, the dashboard), the documented fix applied, and the money checked.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app import create_app
from harness import invariants
from harness.designs import TEST_ENV
from harness.outcome import timeline, wait_settled
from harness.queues import forget_queue
from harness.topology import Topology
from harness.waits import wait_until
from services.accounts import open_account
from services.exchanges import ExchangeRequest, create_exchange
from tests.conftest import REDIS_URL, settings_for, unavailable
from tests.support.outbox_rows import unique_queue
from tests.support.relay_redis import workflow_redis_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

#: Short operator timings: a beat a second, dead after 3 s without one, stuck after 3 s without progress.
TIMINGS = {"HEARTBEAT_INTERVAL_SECONDS": "0.5", "PROCESS_DEAD_AFTER_SECONDS": "3", "STUCK_AFTER_SECONDS": "3",
           "RECONCILE_INTERVAL_SECONDS": "0.5"}
DEAD_AFTER_SECONDS = 3.0
STUCK_AFTER_SECONDS = 3.0
#: The issue's bound: with the test timings a dead process counts as dead within 15 s.
DEAD_WITHIN_SECONDS = 15.0
SETTLE_TIMEOUT_SECONDS = 60.0
SAMPLES = 8


@pytest.fixture
def topology(pg_engine: Engine, postgres_url: str, tmp_path: Path) -> Iterator[Topology]:
    redis_url = workflow_redis_url(REDIS_URL)
    queue = unique_queue("operators")
    try:
        forget_queue(redis_url, queue)
    except redis.RedisError as error:
        unavailable("Redis", error)
    topo = Topology(log_dir=tmp_path, engine=pg_engine, database_url=postgres_url, broker_url=redis_url, queue=queue,
                    env={**TEST_ENV, **TIMINGS})
    try:
        yield topo
    finally:
        topo.stop_all()
        print(topo.describe())
        forget_queue(redis_url, queue)


@pytest.fixture
def operator(topology: Topology) -> FlaskClient:
    """The operations pages and /metrics, as the operator reads them, with the topology's timings."""
    app = create_app(settings_for(topology.engine, broker_url=topology.broker_url, queue_name=topology.queue,
                                  stuck_after_seconds=STUCK_AFTER_SECONDS,
                                  process_dead_after_seconds=DEAD_AFTER_SECONDS, heartbeat_interval_seconds=0.5))
    app.extensions["fx.engine"].dispose()
    app.extensions["fx.engine"] = topology.engine
    return app.test_client()


def metric(client: FlaskClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{re.escape(name + selector)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{selector} not in /metrics"
    return float(found.group(1))


def exchanges(topo: Topology, count: int) -> list[uuid.UUID]:
    account = open_account(topo.engine, "Watched Customer", {"CAD": Decimal("10000.00")})
    return [create_exchange(topo.engine, ExchangeRequest(account, "CAD", "USD", Decimal("25.00")),
                            queue=topo.queue).exchange_id for _ in range(count)]


def assert_money_whole(topo: Topology) -> None:
    report = invariants.check(topo.engine, bank=topo.bank_client(), settled=True)
    assert report.ok, f"{report}\n{topo.describe()}"


def test_with_every_worker_dead_the_stuck_count_holds_in_every_sample_and_the_worker_alarm_is_up(
        topology: Topology, operator: FlaskClient) -> None:
    topology.start_bank()
    worker = topology.start_worker("a")
    topology.start_relay_thread()
    topology.start_reconciler()
    wait_until(lambda: metric(operator, "fx_processes_alive", role="worker") == 1, DEAD_WITHIN_SECONDS,
               "the worker's first heartbeat")

    worker.kill()
    ids = exchanges(topology, 3)
    wait_until(lambda: metric(operator, "fx_processes_alive", role="worker") == 0, DEAD_WITHIN_SECONDS,
               "the killed worker to count as dead")
    assert 'id="alarm-worker"' in operator.get("/ops/").get_data(as_text=True)

    time.sleep(STUCK_AFTER_SECONDS + 0.5)  # past the threshold: every sample from here on counts them
    samples = []
    for _ in range(SAMPLES):  # the reconciler re-sends them meanwhile (every 0.5 s); that is no progress
        samples.append(metric(operator, "fx_exchanges_stuck", state="pending"))
        time.sleep(0.5)
    assert samples == [len(ids)] * SAMPLES
    assert any(e.step == "reconciler" and e.outcome == "requeued" for e in timeline(topology.engine))

    worker.start()  # the documented fix: start a worker
    states = wait_settled(topology, SETTLE_TIMEOUT_SECONDS)
    assert states == {"completed": len(ids)}
    assert metric(operator, "fx_exchanges_stuck", state="pending") == 0
    assert metric(operator, "fx_processes_alive", role="worker") == 1
    assert_money_whole(topology)


def test_with_every_relay_dead_the_relay_alarm_is_up_and_a_restarted_relay_drains_the_outbox(
        topology: Topology, operator: FlaskClient) -> None:
    topology.start_bank()
    topology.start_worker("a")
    relay = topology.start_relay("a", wait=True)
    wait_until(lambda: metric(operator, "fx_processes_alive", role="relay") == 1, DEAD_WITHIN_SECONDS,
               "the relay's first heartbeat")

    relay.kill()
    ids = exchanges(topology, 3)
    wait_until(lambda: metric(operator, "fx_processes_alive", role="relay") == 0, DEAD_WITHIN_SECONDS,
               "the killed relay to count as dead")
    page = operator.get("/ops/").get_data(as_text=True)
    assert 'id="alarm-relay"' in page and "no outbox message reaches the broker" in page
    assert metric(operator, "fx_outbox_unpublished") >= len(ids)

    relay.start()
    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"completed": len(ids)}
    assert 'id="alarm-relay"' not in operator.get("/ops/").get_data(as_text=True)
    assert_money_whole(topology)


def test_a_flushed_broker_queue_is_made_good_by_the_reconciler_and_the_timeline_says_so(
        topology: Topology, operator: FlaskClient) -> None:
    topology.start_bank()
    relay = topology.start_relay_thread()
    ids = exchanges(topology, 3)
    wait_until(lambda: topology.queued() == len(ids), SETTLE_TIMEOUT_SECONDS, "the messages to reach the broker")

    forget_queue(topology.broker_url, topology.queue)  # someone flushes the queue: the messages are gone
    assert topology.queued() == 0
    topology.start_worker("a")
    topology.start_reconciler()

    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"completed": len(ids)}
    requeued = {e.exchange_id for e in timeline(topology.engine) if e.step == "reconciler" and e.outcome == "requeued"}
    assert requeued == set(ids)
    html = operator.get(f"/ops/exchanges/{ids[0]}").get_data(as_text=True)
    assert "requeued" in html
    assert relay.describe()
    assert_money_whole(topology)
