"""The failures an operator must see, on the real topology: worker, relay and reconciler processes,
the bank service, PostgreSQL and Redis. Each failure is injected, its signal read where an operator
reads it (/metrics, the dashboard), the documented fix applied, and the money checked.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from app import create_app
from domain import states as machine
from harness import invariants
from harness.designs import TEST_ENV
from harness.outcome import exchange_states, timeline, wait_settled
from harness.processes import BIN
from harness.queues import forget_queue
from harness.topology import Topology
from harness.waits import wait_until
from models import exchanges as exchanges_table
from services.accounts import open_account
from services.exchanges import ExchangeRequest, create_exchange
from tests.conftest import settings_for
from tests.support.metrics import metric
from tests.support.redis_topology import redis_topology

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.redis]

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
    with redis_topology(pg_engine, postgres_url, tmp_path, "operators", env={**TEST_ENV, **TIMINGS}) as topo:
        yield topo


@pytest.fixture
def operator(topology: Topology) -> FlaskClient:
    """The operations pages and /metrics, as the operator reads them, with the topology's timings."""
    app = create_app(settings_for(topology.engine, broker_url=topology.broker_url, queue_name=topology.queue,
                                  stuck_after_seconds=STUCK_AFTER_SECONDS,
                                  process_dead_after_seconds=DEAD_AFTER_SECONDS, heartbeat_interval_seconds=0.5))
    app.extensions["fx.engine"].dispose()
    app.extensions["fx.engine"] = topology.engine
    return app.test_client()



def exchanges(topo: Topology, count: int) -> list[uuid.UUID]:
    account = open_account(topo.engine, "Watched Customer", {"CAD": Decimal("10000.00")})
    return [create_exchange(topo.engine, ExchangeRequest(account, "CAD", "USD", Decimal("25.00")),
                            queue=topo.queue).exchange_id for _ in range(count)]


def requeued(topo: Topology) -> set[uuid.UUID]:
    """The exchanges the reconciler has re-sent."""
    return {e.exchange_id for e in timeline(topo.engine) if e.step == "reconciler" and e.outcome == "requeued"}


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

    wait_until(lambda: metric(operator, "fx_exchanges_stuck", state="pending") == len(ids),
               STUCK_AFTER_SECONDS + SETTLE_TIMEOUT_SECONDS, "the exchanges to count as stuck")
    # From here on every sample counts them, also after the reconciler has re-sent each one:
    # a re-send is no progress. Sample until SAMPLES of them and one taken after every re-send.
    samples: list[float] = []

    def sampled_past_the_resends() -> bool:
        resent = requeued(topology) >= set(ids)  # read before the sample, so the sample comes after
        samples.append(metric(operator, "fx_exchanges_stuck", state="pending"))
        return resent and len(samples) >= SAMPLES

    wait_until(sampled_past_the_resends, SETTLE_TIMEOUT_SECONDS,
               lambda: f"the reconciler to re-send every stuck exchange (samples {samples})", interval=0.5)
    assert samples == [len(ids)] * len(samples)

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
    assert requeued(topology) == set(ids)
    html = operator.get(f"/ops/exchanges/{ids[0]}").get_data(as_text=True)
    assert "requeued" in html
    assert relay.describe()
    assert_money_whole(topology)


def send_raw(topo: Topology, actor: str, *args: object) -> None:
    """A message as some old or broken producer would put it on the queue, past our outbox."""
    broker = RedisBroker(url=topo.broker_url)
    try:
        broker.enqueue(dramatiq.Message(queue_name=topo.queue, actor_name=actor, args=args, kwargs={}, options={}))
    finally:
        broker.close()


def dead_letter_section(client: FlaskClient) -> str:
    page = client.get("/ops/").get_data(as_text=True)
    return page[page.index("<h2>Dead-lettered messages</h2>"):] if "<h2>Dead-lettered messages</h2>" in page else ""


def test_a_poison_message_is_a_dead_letter_with_its_error_on_the_page_and_deleting_it_clears_the_count(
        topology: Topology, operator: FlaskClient) -> None:
    topology.start_bank()
    topology.start_worker("a", extra={"STEP_MAX_RETRIES": "1", "CREDIT_MAX_ATTEMPTS": "2"})
    assert metric(operator, "fx_dead_letters") == 0

    send_raw(topology, machine.DEBIT.actor, "not-a-uuid")
    wait_until(lambda: metric(operator, "fx_dead_letters") == 1, SETTLE_TIMEOUT_SECONDS, "the poison's dead letter")
    section = dead_letter_section(operator)
    assert "not-a-uuid" in section and "badly formed hexadecimal UUID string" in section
    found = re.search(r'href="/ops/dead-letters/([^"]+)"', section)
    assert found, section
    detail = operator.get(f"/ops/dead-letters/{found.group(1)}").get_data(as_text=True)
    assert 'id="traceback"' in detail and machine.DEBIT.actor in detail

    deleted = operator.post(f"/api/ops/dead-letters/{found.group(1)}/delete")
    assert deleted.status_code == 200, deleted.get_data(as_text=True)
    assert metric(operator, "fx_dead_letters") == 0 and dead_letter_section(operator) == ""
    # The worker that met the poison serves on: real exchanges still complete.
    topology.start_relay_thread()
    ids = exchanges(topology, 2)
    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"completed": len(ids)}
    assert_money_whole(topology)


def test_a_bank_answering_200_with_a_body_it_cannot_read_parks_within_the_budget_and_a_retry_settles_it(
        topology: Topology, operator: FlaskClient) -> None:
    bank = topology.start_bank()
    topology.start_worker("a", extra={"CREDIT_MAX_ATTEMPTS": "3"})
    topology.start_relay_thread()
    bank.set_faults(garbled=True)  # the bank applies each transfer, then answers 200 with nonsense
    ids = exchanges(topology, 2)

    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"needs_attention": len(ids)}
    with topology.engine.connect() as conn:
        parked = conn.execute(select(exchanges_table.c.attempt, exchanges_table.c.last_error)).all()
    assert [attempt for attempt, _ in parked] == [3, 3]  # within the budget, not past it
    assert all("body we cannot read" in error for _, error in parked)
    page = operator.get("/ops/").get_data(as_text=True)
    assert all(str(i) in page[page.index("<h2>Needs attention"):page.index("<h2>Failed")] for i in ids)
    assert metric(operator, "fx_exchanges_stuck", state="debited") == 0  # parked is listed apart

    bank.reset_faults()
    for exchange_id in ids:  # the documented fix, from the operator API the page's buttons call
        answer = operator.post(f"/api/ops/exchanges/{exchange_id}/actions/retry")
        assert answer.status_code == 202, answer.get_data(as_text=True)
    # (Parked counts as settled, so wait for the states themselves, not just a quiet outbox.)
    wait_until(lambda: exchange_states(topology.engine) == {"completed": len(ids)}, SETTLE_TIMEOUT_SECONDS,
               "the retried exchanges to complete")
    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"completed": len(ids)}
    assert len(bank.all_applied()) == len(ids)  # the unreadable answers were applied once, never twice
    assert_money_whole(topology)


def test_reconcile_once_with_the_bank_process_gone_exits_3_saying_unknown_and_0_once_it_is_back(
        topology: Topology, operator: FlaskClient) -> None:
    topology.start_bank()
    topology.start_worker("a")
    topology.start_relay_thread()
    ids = exchanges(topology, 2)
    assert wait_settled(topology, SETTLE_TIMEOUT_SECONDS) == {"completed": len(ids)}
    bank = topology.by_role("bank")[0]

    bank.kill()
    gone = reconcile_once_process(topology)
    assert gone.returncode == 3, gone.stdout + gone.stderr
    assert "UNKNOWN" in gone.stdout and "agree" not in gone.stdout
    page = operator.get("/ops/").get_data(as_text=True)
    assert '<p class="error" id="bank-check">Ledger and bank could not be compared' in page
    assert "Mismatches are unknown since" in page

    bank.start()
    topology.wait_bank()
    back = reconcile_once_process(topology)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "Ledger and bank last compared" in operator.get("/ops/").get_data(as_text=True)
    assert metric(operator, "fx_reconciler_last_bank_compare_timestamp_seconds") > 0
    assert_money_whole(topology)


def reconcile_once_process(topo: Topology) -> subprocess.CompletedProcess[str]:
    """`flask --app app reconcile once`, as an operator types it."""
    return subprocess.run((str(BIN / "flask"), "--app", "app", "reconcile", "once"), env=topo.env("reconcile-once"),
                          capture_output=True, text=True, timeout=SETTLE_TIMEOUT_SECONDS, check=False)
