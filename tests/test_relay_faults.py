"""The relay under faults, as a real process: killed mid-batch, racing its peers, losing
its broker, losing its database connections.

Each test starts `flask --app app relay run` subprocesses against this run's PostgreSQL
database and a real broker, injects one fault, and checks the outbox's promise once the
fault stops: every message reaches the broker at least once, and no row stays unpublished.
Durations are never asserted; every wait has a deadline.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import redis
from conftest import RABBITMQ_URL, REDIS_URL, unavailable
from sqlalchemy import Engine, text

from harness.processes import Process
from harness.queues import message_ids
from harness.servers import RedisServer, start_private_redis
from harness.topology import Topology, application_name, published_total
from harness.waits import wait_until
from tests.support.outbox_rows import (
    RabbitmqProbe,
    RedisProbe,
    as_strings,
    duplicates,
    insert_messages,
    outbox_states,
    unique_queue,
    unpublished_count,
    unpublished_ids,
)

pytestmark = [pytest.mark.process, pytest.mark.postgres]

#: Deadline for a relay to publish what a test wrote; generous, so only a stuck relay fails it.
DRAIN_TIMEOUT_SECONDS = 90.0
#: A relay subprocess imports the app and connects before its loop starts.
START_TIMEOUT_SECONDS = 30.0

Probe = RedisProbe | RabbitmqProbe


# Fixtures ----------------------------------------------------------------------------


@pytest.fixture
def shared_redis() -> Iterator[RedisProbe]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        unavailable("Redis", error)
    finally:
        client.close()
    probe = RedisProbe(REDIS_URL)
    yield probe
    probe.cleanup()


@pytest.fixture
def rabbitmq() -> Iterator[RabbitmqProbe]:
    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except pika.exceptions.AMQPError as error:
        unavailable("RabbitMQ", error)
    probe = RabbitmqProbe(RABBITMQ_URL)
    yield probe
    probe.cleanup()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Probe:
    """The broker named by the test's parameter: the shared Redis or RabbitMQ."""
    return request.getfixturevalue({"redis": "shared_redis", "rabbitmq": "rabbitmq"}[request.param])


@pytest.fixture
def relays(pg_engine: Engine, postgres_url: str, tmp_path: Path) -> Iterator[Topology]:
    """Relay subprocesses of one test, all stopped at its end.

    Request it after the broker fixture, so relays stop before the broker's queues are
    deleted. Their output is printed at teardown: pytest shows it only if the test failed.
    """
    topology = Topology(log_dir=tmp_path, engine=pg_engine, database_url=postgres_url)
    yield topology
    topology.stop_all()
    if topology.processes.processes:
        print(topology.describe())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that fsyncs every write, so a kill -9 loses nothing acknowledged."""
    try:
        server = start_private_redis(
            tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always", "--save", ""
        )
    except FileNotFoundError as error:
        unavailable("redis-server", error)
    yield server
    server.kill()


# Helpers -----------------------------------------------------------------------------


def wait_published(engine: Engine, queue: str, *relays: Process) -> None:
    """Wait until no row of `queue` is unpublished, failing with the relays' output if not."""

    def explain() -> str:
        states = "\n\n".join(relay.describe() for relay in relays)
        return f"queue {queue} to drain; still unpublished: {unpublished_count(engine, queue)}\n{states}"

    wait_until(lambda: unpublished_count(engine, queue) == 0, DRAIN_TIMEOUT_SECONDS, what=explain, interval=0.1)


def assert_each_delivered(deliveries: Counter[str], ids: list[uuid.UUID]) -> None:
    expected = as_strings(ids)
    missing = expected - set(deliveries)
    strangers = set(deliveries) - expected
    assert not missing, f"{len(missing)} of {len(expected)} messages never reached the broker"
    assert not strangers, f"{len(strangers)} messages on the queue were never written to this outbox"


def report_duplicates(
    record_property: Callable[[str, object], None], label: str, deliveries: Counter[str]
) -> int:
    count = duplicates(deliveries)
    print(f"{label}: {sum(deliveries.values())} deliveries of {len(deliveries)} messages, {count} duplicates")
    record_property(f"{label}_duplicates", count)
    return count


# 1 and 5: killed between publish and commit -------------------------------------------


@pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
    indirect=True,
)
def test_relay_killed_after_publishing_republishes_exactly_that_batch(
    pg_engine: Engine, broker: Probe, relays: Topology
) -> None:
    batch_size, total = 50, 200
    queue = broker.new_queue("crash")
    ids = insert_messages(pg_engine, queue, total)

    crashing = relays.start_relay(
        "crashing", broker_url=broker.url, batch_size=batch_size, failpoints="relay.after_publish=kill"
    )
    assert crashing.wait_exit(START_TIMEOUT_SECONDS + 30) == -signal.SIGKILL, crashing.describe()

    crashed_batch = broker.deliveries(queue)
    assert len(crashed_batch) == batch_size and set(crashed_batch.values()) == {1}, crashed_batch
    assert set(crashed_batch) <= as_strings(ids)
    # The kill came before the commit: the database still owes every message.
    assert unpublished_ids(pg_engine, queue) == set(ids)
    assert {state.attempts for state in outbox_states(pg_engine, queue)} == {0}

    recovering = relays.start_relay("recovering", broker_url=broker.url, batch_size=batch_size)
    wait_published(pg_engine, queue, recovering)
    assert recovering.stop() == 0, recovering.describe()

    deliveries = broker.deliveries(queue)
    assert_each_delivered(deliveries, ids)
    twice = {message_id for message_id, seen in deliveries.items() if seen == 2}
    assert twice == set(crashed_batch), "only the crashed batch may be published twice"
    assert set(deliveries.values()) <= {1, 2}
    assert unpublished_count(pg_engine, queue) == 0


# 2 and 5: relays side by side -------------------------------------------------------


@pytest.mark.parametrize(
    ("broker", "relay_count", "message_count"),
    [
        pytest.param("redis", 4, 10_000, marks=pytest.mark.redis, id="redis-4x10000"),
        pytest.param("rabbitmq", 2, 2_000, marks=pytest.mark.rabbitmq, id="rabbitmq-2x2000"),
    ],
    indirect=["broker"],
)
def test_relays_side_by_side_publish_every_message_at_least_once(
    pg_engine: Engine,
    broker: Probe,
    relays: Topology,
    relay_count: int,
    message_count: int,
    record_property: Callable[[str, object], None],
) -> None:
    queue = broker.new_queue("side-by-side")
    started = [relays.start_relay(f"r{n}", broker_url=broker.url, batch_size=100) for n in range(relay_count)]
    for relay in started:
        relay.wait_ready(START_TIMEOUT_SECONDS)

    # Written while they run, in many commits: every commit wakes every relay at once.
    ids = insert_messages(pg_engine, queue, message_count, per_transaction=500)
    wait_published(pg_engine, queue, *started)
    for relay in started:
        assert relay.stop() == 0, relay.describe()

    deliveries = broker.deliveries(queue)
    assert_each_delivered(deliveries, ids)
    assert unpublished_count(pg_engine, queue) == 0
    # Every delivery belongs to a batch some relay committed: nothing was sent and then lost track of.
    per_relay = {relay.name: published_total(relay) for relay in started}
    print(f"published per relay: {per_relay}")
    record_property("published_per_relay", per_relay)
    assert sum(total or 0 for total in per_relay.values()) == sum(deliveries.values()), per_relay
    report_duplicates(record_property, f"{broker.name}_{relay_count}_relays", deliveries)


# 3: the broker goes away ------------------------------------------------------------


@pytest.mark.redis
def test_relay_outlasts_a_redis_outage_and_loses_nothing(
    pg_engine: Engine,
    private_redis: RedisServer,
    relays: Topology,
    record_property: Callable[[str, object], None],
) -> None:
    queue = unique_queue("redis-outage")
    # Each batch lingers after publishing, so a backlog takes a while and the kill lands in it.
    relay = relays.start_relay(
        "outage", broker_url=private_redis.url, batch_size=50, failpoints="relay.after_publish=sleep:0.02"
    )
    relay.wait_ready(START_TIMEOUT_SECONDS)

    before = insert_messages(pg_engine, queue, 500, per_transaction=100)
    wait_published(pg_engine, queue, relay)

    during = insert_messages(pg_engine, queue, 2_000, per_transaction=2_000)
    wait_until(
        lambda: unpublished_count(pg_engine, queue) < len(during),
        DRAIN_TIMEOUT_SECONDS,
        what="the relay to start on the backlog",
        interval=0.01,
    )
    private_redis.kill()
    left_at_kill = unpublished_count(pg_engine, queue)
    print(f"redis-server killed with {left_at_kill} of {len(during)} backlog messages unpublished")
    record_property("unpublished_when_redis_was_killed", left_at_kill)
    while_down = [
        message_id for _ in range(3) for message_id in insert_messages(pg_engine, queue, 100, per_transaction=100)
    ]

    def failures_recorded() -> bool:
        states = outbox_states(pg_engine, queue)
        return any(s.published_at is None and s.attempts >= 2 and s.last_error for s in states)

    wait_until(
        failures_recorded, DRAIN_TIMEOUT_SECONDS, what=lambda: f"failed attempts on the rows: {relay.describe()}"
    )
    assert relay.is_running(), relay.describe()
    assert set(while_down) <= unpublished_ids(pg_engine, queue), "published while the broker was down"
    errors = {s.last_error for s in outbox_states(pg_engine, queue) if s.last_error}
    assert all("ConnectionError" in error for error in errors), errors

    private_redis.start()  # the same port and data directory: the append-only file comes back
    wait_published(pg_engine, queue, relay)
    assert relay.stop() == 0, relay.describe()

    deliveries = message_ids(private_redis.url, queue)
    assert_each_delivered(deliveries, before + during + while_down)
    states = outbox_states(pg_engine, queue)
    assert all(s.published_at is not None and s.last_error is None for s in states)
    assert max(s.attempts for s in states) >= 2, "the rows keep no trace of the failed attempts"
    report_duplicates(record_property, "redis_outage", deliveries)


# 4: the database drops the relay's connections ---------------------------------------

#: Every connection to this database but the asking one. Materialized first: in a single
#: WHERE, PostgreSQL may call pg_terminate_backend before checking `pid <> pg_backend_pid()`.
_OTHER_BACKENDS = (
    "WITH others AS MATERIALIZED ("
    "  SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid())"
)


def terminate_other_backends(engine: Engine) -> set[int]:
    """pg_terminate_backend every connection to this database but the one asking."""
    with engine.connect() as conn:
        return set(conn.scalars(text(f"{_OTHER_BACKENDS} SELECT pid FROM others WHERE pg_terminate_backend(pid)")))


def terminate_all_if_holding_rows(engine: Engine, application_name: str) -> set[int]:
    """Terminate every other connection, but only while `application_name` holds claimed rows.

    A transaction that locked rows with FOR UPDATE has a transaction id; the relay's empty
    claims (it polls) have none, so they are not mistaken for a batch in flight. One
    statement, so the relay cannot commit between being seen mid-batch and being cut off;
    CASE fixes the evaluation order that a plain AND would leave to the planner.
    """
    with engine.connect() as conn:
        return set(
            conn.scalars(
                text(
                    f"{_OTHER_BACKENDS}, caught AS MATERIALIZED ("
                    "  SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    "  AND application_name = :name AND state = 'idle in transaction' AND backend_xid IS NOT NULL)"
                    " SELECT pid FROM others"
                    " WHERE CASE WHEN EXISTS (SELECT 1 FROM caught) THEN pg_terminate_backend(pid) ELSE false END"
                ),
                {"name": application_name},
            )
        )


def backends_of(engine: Engine, application_name: str) -> dict[int, str]:
    """The connections a relay holds now, by pid, with the last statement each ran."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": application_name},
        )
        return {pid: query for pid, query in rows}


def listening(backends: dict[int, str]) -> set[int]:
    return {pid for pid, query in backends.items() if query.upper().startswith("LISTEN")}


@pytest.mark.redis
def test_relay_reconnects_after_its_database_connections_are_terminated(
    pg_engine: Engine,
    shared_redis: RedisProbe,
    relays: Topology,
    record_property: Callable[[str, object], None],
) -> None:
    batch_size = 100
    queue = shared_redis.new_queue("pg-terminate")
    # Each batch stays open a moment after publishing, so the test can cut it off there.
    relay = relays.start_relay(
        "terminated", broker_url=shared_redis.url, batch_size=batch_size, failpoints="relay.after_publish=sleep:0.2"
    )
    relay.wait_ready(START_TIMEOUT_SECONDS)
    name = application_name(relay)
    first = insert_messages(pg_engine, queue, 300)
    wait_published(pg_engine, queue, relay)

    # Idle between batches: the LISTEN connection and the pooled one are cut.
    def listening_and_pooled() -> dict[int, str] | None:
        held = backends_of(pg_engine, name)
        return held if listening(held) and len(held) >= 2 else None

    before = wait_until(
        listening_and_pooled,
        START_TIMEOUT_SECONDS,
        what=lambda: f"the relay's LISTEN and pooled connections, got {backends_of(pg_engine, name)}",
    )
    terminated = terminate_other_backends(pg_engine)
    assert set(before) <= terminated, (before, terminated)

    # Mid-batch: published to Redis, not yet committed, when its connection goes.
    second = insert_messages(pg_engine, queue, 300)
    terminated |= wait_until(
        lambda: terminate_all_if_holding_rows(pg_engine, name),
        DRAIN_TIMEOUT_SECONDS,
        what=lambda: f"the relay inside a batch: {relay.describe()}",
        interval=0.01,
    )
    wait_published(pg_engine, queue, relay)
    third = insert_messages(pg_engine, queue, 300)
    wait_published(pg_engine, queue, relay)

    assert relay.is_running(), relay.describe()
    wait_until(
        lambda: listening(backends_of(pg_engine, name)) - terminated,
        START_TIMEOUT_SECONDS,
        what=lambda: f"the relay to LISTEN again on a new connection: {relay.describe()}",
    )
    assert relay.stop() == 0, relay.describe()
    deliveries = shared_redis.deliveries(queue)
    assert_each_delivered(deliveries, first + second + third)
    assert unpublished_count(pg_engine, queue) == 0
    # The batch cut off before its commit was published again, and only that batch.
    assert report_duplicates(record_property, "pg_terminate", deliveries) == batch_size
    assert set(deliveries.values()) == {1, 2}
