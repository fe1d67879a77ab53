"""The relay, one batch at a time: `run_once()` against real databases and real brokers.

Each test owns a queue name, so the messages it finds in Redis are its own; Redis
database 9 keeps these tests away from the default database of the shared server, and
each test deletes only its own queue's keys (no FLUSHDB: another session may be using
database 9 at the same time). Time is moved by rewriting `available_at` /
`published_at`, never by sleeping.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from conftest import RABBITMQ_URL, unavailable
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from flask import Flask
from sqlalchemy import Engine, event, func, select, update

from infra.database import make_engine
from models import outbox_messages
from models.base import utcnow
from outbox import relay as relay_module
from outbox import store, writer
from outbox.publisher import TRACE_OPTION, BrokerPublisher, RedisPipelinePublisher
from outbox.relay import BatchResult, Relay, RelayConfig
from tests.conftest import REDIS_URL

#: Nothing listens on port 1: a broker that refuses every connection.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
ACTOR = "convert"
#: A generous bound on waiting for threads, so a deadlock fails instead of hanging.
DEADLINE_SECONDS = 30


@pytest.fixture
def redis_publisher(redis_client: redis.Redis) -> Iterator[RedisPipelinePublisher]:
    publisher = RedisPipelinePublisher(REDIS_URL)
    yield publisher
    publisher.close()


@pytest.fixture
def stub_broker(queue: str) -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[])
    broker.declare_queue(queue)
    yield broker
    broker.close()


@pytest.fixture
def rabbitmq_broker(queue: str) -> Iterator[RabbitmqBroker]:
    """A RabbitMQ broker with publisher confirms, as the daemon builds it for amqp:// URLs."""
    broker = RabbitmqBroker(url=RABBITMQ_URL, confirm_delivery=True, middleware=[])
    try:
        broker.declare_queue(queue, ensure=True)
    except Exception as error:
        broker.close()
        unavailable("RabbitMQ", error)
    yield broker
    for name in (queue, dq_name(queue), xq_name(queue)):
        broker.channel.queue_delete(name)
    broker.close()


def write(
    engine: Engine,
    queue: str,
    count: int,
    *,
    delay: timedelta | None = None,
    now: datetime | None = None,
    spacing: timedelta = timedelta(0),
) -> list[uuid.UUID]:
    """`count` outbox rows in one committed transaction, `spacing` apart and all in the past."""
    base = now or utcnow() - count * spacing
    with engine.begin() as conn:
        return [
            writer.enqueue(
                conn,
                actor=ACTOR,
                payload={"exchange_id": str(uuid.uuid4()), "n": n},
                queue=queue,
                delay=delay,
                now=base + n * spacing,
            )
            for n in range(count)
        ]


def outbox(engine: Engine) -> dict[uuid.UUID, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(outbox_messages))}


def redis_messages(client: redis.Redis, queue: str) -> list[Message[Any]]:
    """Every message Dramatiq's Redis broker holds for `queue`, as a worker would read it."""
    return [Message.decode(data) for data in client.hvals(f"dramatiq:{queue}.msgs")]


def stub_messages(broker: StubBroker, queue: str) -> list[Message[Any]]:
    """The messages on the stub broker's queue, in the order they were enqueued."""
    pending = broker.queues[queue]
    return [Message.decode(pending.get_nowait()) for _ in range(pending.qsize())]


def set_times(engine: Engine, ids: list[uuid.UUID], **values: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(outbox_messages).where(outbox_messages.c.id.in_(ids)).values(**values))


def test_run_once_publishes_due_rows_to_redis_with_the_outbox_id_as_message_id(
    engine: Engine, redis_client: redis.Redis, redis_publisher: RedisPipelinePublisher, queue: str
) -> None:
    ids = write(engine, queue, 3)
    with engine.begin() as conn:
        traced = writer.enqueue(
            conn, actor=ACTOR, payload={"n": 99}, queue=queue, trace_headers={"sentry-trace": "abc-def-1"}
        )

    result = Relay(engine, redis_publisher).run_once()

    assert result == BatchResult(published=4)
    rows = outbox(engine)
    assert all(row.published_at is not None and row.attempts == 1 and row.last_error is None for row in rows.values())
    messages = {uuid.UUID(message.message_id): message for message in redis_messages(redis_client, queue)}
    assert set(messages) == {*ids, traced}
    for message_id, message in messages.items():
        assert message.queue_name == queue
        assert message.actor_name == ACTOR
        assert message.kwargs == rows[message_id].payload
    assert messages[traced].options[TRACE_OPTION] == {"sentry-trace": "abc-def-1"}
    assert redis_client.llen(f"dramatiq:{queue}") == 4, "each message is also on the queue a worker pops"


def test_run_once_does_not_publish_a_published_row_again(
    engine: Engine, redis_client: redis.Redis, redis_publisher: RedisPipelinePublisher, queue: str
) -> None:
    write(engine, queue, 2)
    relay = Relay(engine, redis_publisher)

    assert relay.run_once() == BatchResult(published=2)
    assert relay.run_once() == BatchResult()
    assert redis_client.hlen(f"dramatiq:{queue}.msgs") == 2


def test_broker_publisher_enqueues_every_row_on_a_dramatiq_broker(
    engine: Engine, stub_broker: StubBroker, queue: str
) -> None:
    ids = write(engine, queue, 2, spacing=timedelta(seconds=1))

    result = Relay(engine, BrokerPublisher(stub_broker)).run_once()

    assert result == BatchResult(published=2)
    messages = stub_messages(stub_broker, queue)
    assert [uuid.UUID(message.message_id) for message in messages] == ids
    rows = outbox(engine)
    assert [(message.actor_name, message.kwargs) for message in messages] == [
        (ACTOR, rows[row_id].payload) for row_id in ids
    ]


def test_broker_publisher_publishes_to_rabbitmq_with_publisher_confirms(
    engine: Engine, rabbitmq_broker: RabbitmqBroker, queue: str
) -> None:
    ids = write(engine, queue, 2, spacing=timedelta(seconds=1))

    assert Relay(engine, BrokerPublisher(rabbitmq_broker)).run_once() == BatchResult(published=2)

    messages = []
    while True:
        method, _properties, body = rabbitmq_broker.channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        messages.append(Message.decode(body))
    assert [uuid.UUID(message.message_id) for message in messages] == ids
    rows = outbox(engine)
    assert [message.kwargs for message in messages] == [rows[row_id].payload for row_id in ids]


def test_a_broker_that_rejects_the_message_leaves_the_rows_unpublished(engine: Engine, queue: str) -> None:
    write(engine, queue, 2)
    broker = StubBroker(middleware=[])  # the queue is never declared: enqueue raises QueueNotFound

    result = Relay(engine, BrokerPublisher(broker)).run_once()

    assert result.published == 0 and result.failed == 2
    assert result.error is not None and "QueueNotFound" in result.error
    assert all(row.published_at is None and row.last_error == result.error for row in outbox(engine).values())


def test_rows_delayed_into_the_future_are_published_only_once_due(
    engine: Engine, stub_broker: StubBroker, queue: str
) -> None:
    [due] = write(engine, queue, 1)
    [later] = write(engine, queue, 1, delay=timedelta(hours=1))
    relay = Relay(engine, BrokerPublisher(stub_broker))

    assert relay.run_once() == BatchResult(published=1)
    assert [message.message_id for message in stub_messages(stub_broker, queue)] == [str(due)]
    assert relay.run_once() == BatchResult(), "the delayed row is not due yet"
    assert outbox(engine)[later].published_at is None

    set_times(engine, [later], available_at=utcnow() - timedelta(seconds=1))

    assert relay.run_once() == BatchResult(published=1)
    assert [message.message_id for message in stub_messages(stub_broker, queue)] == [str(later)]
    assert outbox(engine)[later].published_at is not None


def test_a_broker_outage_keeps_rows_unpublished_with_the_error_and_loses_nothing(
    engine: Engine, redis_client: redis.Redis, redis_publisher: RedisPipelinePublisher, queue: str
) -> None:
    ids = write(engine, queue, 3)
    dead = RedisPipelinePublisher(DEAD_REDIS_URL)
    try:
        first = Relay(engine, dead).run_once()
        second = Relay(engine, dead).run_once()
    finally:
        dead.close()

    for result in (first, second):
        assert result.published == 0 and result.failed == 3
        assert result.error is not None and "ConnectionError" in result.error
    rows = outbox(engine)
    assert all(row.published_at is None for row in rows.values())
    assert [rows[row_id].attempts for row_id in ids] == [2, 2, 2], "each failed attempt is counted"
    assert all(row.last_error == second.error for row in rows.values())
    with engine.connect() as conn:
        assert store.stats(conn, now=utcnow()).failing == 3
    assert redis_client.hlen(f"dramatiq:{queue}.msgs") == 0

    assert Relay(engine, redis_publisher).run_once() == BatchResult(published=3)

    rows = outbox(engine)
    assert all(row.published_at is not None and row.last_error is None for row in rows.values())
    assert {uuid.UUID(message.message_id) for message in redis_messages(redis_client, queue)} == set(ids)


def test_a_backlog_larger_than_the_batch_size_drains_over_several_run_once_calls_oldest_first(
    engine: Engine, stub_broker: StubBroker, queue: str
) -> None:
    ids = write(engine, queue, 7, spacing=timedelta(seconds=1))
    relay = Relay(engine, BrokerPublisher(stub_broker), RelayConfig(batch_size=3))

    results = [relay.run_once() for _ in range(4)]

    assert [result.published for result in results] == [3, 3, 1, 0]
    assert [uuid.UUID(message.message_id) for message in stub_messages(stub_broker, queue)] == ids
    assert all(row.published_at is not None for row in outbox(engine).values())


def test_a_relay_on_postgresql_skips_rows_another_relay_has_claimed(
    pg_engine: Engine, stub_broker: StubBroker, queue: str
) -> None:
    ids = write(pg_engine, queue, 5, spacing=timedelta(seconds=1))
    # Without SKIP LOCKED the relay would wait on the held rows; fail fast instead of hanging.
    # (SET LOCAL, not a startup option: it also holds through PgBouncer, tests/test_pgbouncer.py.)
    impatient = make_engine(pg_engine.url.render_as_string(hide_password=False), transaction_pooler=True)
    event.listen(impatient, "begin", lambda conn: conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'"))
    relay = Relay(impatient, BrokerPublisher(stub_broker))
    try:
        with pg_engine.begin() as other_relay:
            held = [row.id for row in store.claim_batch(other_relay, limit=2, now=utcnow())]
            assert held == ids[:2]

            assert relay.run_once() == BatchResult(published=3)
            assert [uuid.UUID(m.message_id) for m in stub_messages(stub_broker, queue)] == ids[2:]
            other_relay.rollback()  # the other relay died before publishing: its rows are free again

        assert relay.run_once() == BatchResult(published=2)
        assert [uuid.UUID(m.message_id) for m in stub_messages(stub_broker, queue)] == held
    finally:
        impatient.dispose()


def test_two_relays_on_postgresql_share_a_backlog_and_publish_every_row_exactly_once(
    pg_engine: Engine, redis_client: redis.Redis, queue: str
) -> None:
    total = 300
    ids = write(pg_engine, queue, total)
    publishers = [RedisPipelinePublisher(REDIS_URL) for _ in range(2)]
    relays = [Relay(pg_engine, p, RelayConfig(batch_size=10), name=f"relay-{n}") for n, p in enumerate(publishers)]
    published = {relay.name: 0 for relay in relays}
    errors: list[BaseException] = []
    start = threading.Barrier(len(relays))

    def unpublished() -> int:
        with pg_engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(outbox_messages).where(outbox_messages.c.published_at.is_(None))
            ).scalar_one()

    def drain(relay: Relay) -> None:
        try:
            start.wait(timeout=DEADLINE_SECONDS)
            deadline = time.monotonic() + DEADLINE_SECONDS
            while time.monotonic() < deadline:
                result = relay.run_once()
                assert result.error is None, result.error
                published[relay.name] += result.published
                # Nothing claimable can also mean the other relay holds the rest: stop only when all is done.
                if result.published == 0 and unpublished() == 0:
                    return
            raise AssertionError(f"{relay.name} did not finish draining")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(relay,), name=relay.name) for relay in relays]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_SECONDS * 2)
    finally:
        for publisher in publishers:
            publisher.close()

    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    assert sum(published.values()) == total, published
    message_ids = [uuid.UUID(message.message_id) for message in redis_messages(redis_client, queue)]
    assert len(message_ids) == total, "a row claimed by both relays would have been sent twice"
    assert set(message_ids) == set(ids)
    assert all(row.published_at is not None and row.attempts == 1 for row in outbox(pg_engine).values())


def age_rows(engine: Engine, queue: str, count: int, *, published_ago: timedelta | None) -> list[uuid.UUID]:
    """Rows written three hours ago, published `published_ago` (None: never published)."""
    now = utcnow()
    ids = write(engine, queue, count, now=now - timedelta(hours=3))
    if published_ago is not None:
        set_times(engine, ids, published_at=now - published_ago, attempts=1)
    return ids


def test_housekeeping_purges_published_rows_past_retention_in_batches_and_keeps_the_rest(
    engine: Engine, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "PURGE_BATCH_ROWS", 3)
    expired = age_rows(engine, queue, 7, published_ago=timedelta(hours=2))
    recent = age_rows(engine, queue, 2, published_ago=timedelta(minutes=10))
    waiting = age_rows(engine, queue, 2, published_ago=None)
    relay = Relay(engine, BrokerPublisher(StubBroker(middleware=[])), RelayConfig(retention=timedelta(hours=1)))

    stats = relay.housekeeping()

    assert set(outbox(engine)) == {*recent, *waiting}
    assert relay.totals["purged"] == len(expired)
    assert stats.unpublished == 2


def test_purge_deletes_at_most_its_limit_per_statement(engine: Engine, queue: str) -> None:
    age_rows(engine, queue, 7, published_ago=timedelta(hours=2))
    cutoff = utcnow() - timedelta(hours=1)

    purged = []
    for _ in range(4):
        with engine.begin() as conn:
            purged.append(store.purge_published(conn, older_than=cutoff, limit=3))

    assert purged == [3, 3, 1, 0]


def test_one_housekeeping_pass_purges_a_bounded_number_of_batches(
    engine: Engine, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "PURGE_BATCH_ROWS", 2)
    monkeypatch.setattr(relay_module, "PURGE_BATCHES_PER_PASS", 2)
    age_rows(engine, queue, 7, published_ago=timedelta(hours=2))
    relay = Relay(engine, BrokerPublisher(StubBroker(middleware=[])), RelayConfig(retention=timedelta(hours=1)))

    relay.housekeeping()
    assert len(outbox(engine)) == 3, "two batches of two per pass"
    relay.housekeeping()
    relay.housekeeping()
    assert outbox(engine) == {}


def write_status_fixture(engine: Engine, queue: str) -> None:
    """Two due rows (the oldest written two minutes ago, one failing), one delayed row,
    three rows published seconds ago and one published ten minutes ago."""
    now = utcnow()
    [oldest] = write(engine, queue, 1, now=now - timedelta(seconds=120))
    write(engine, queue, 1)
    write(engine, queue, 1, delay=timedelta(hours=1))
    with engine.begin() as conn:
        store.record_failure(conn, [oldest], error="ConnectionError: broker down")
    fresh = write(engine, queue, 3)
    set_times(engine, fresh, published_at=now - timedelta(seconds=10))
    stale = write(engine, queue, 1, now=now - timedelta(minutes=11))
    set_times(engine, stale, published_at=now - timedelta(minutes=10))


def test_stats_report_the_backlog_its_oldest_age_and_the_recent_publish_count(engine: Engine, queue: str) -> None:
    write_status_fixture(engine, queue)

    with engine.connect() as conn:
        stats = store.stats(conn, now=utcnow())

    assert (stats.unpublished, stats.due, stats.failing, stats.published_last_minute) == (3, 2, 1, 3)
    assert stats.oldest_unpublished_age_seconds is not None
    assert 120 <= stats.oldest_unpublished_age_seconds < 3600


def test_stats_of_an_empty_outbox_have_no_oldest_age(engine: Engine) -> None:
    with engine.connect() as conn:
        stats = store.stats(conn, now=utcnow())

    assert stats == store.OutboxStats(
        unpublished=0, due=0, oldest_unpublished_age_seconds=None, published_last_minute=0, failing=0
    )


def relay_status(app: Flask) -> dict[str, str]:
    result = app.test_cli_runner().invoke(args=["relay", "status"])
    assert result.exit_code == 0, result.output
    return dict(
        (label.strip(), value.strip()) for label, value in (line.split(":", 1) for line in result.output.splitlines())
    )


def test_relay_status_prints_the_backlog_its_oldest_age_and_the_recent_publish_count(
    app: Flask, engine: Engine, queue: str
) -> None:
    write_status_fixture(engine, queue)

    status = relay_status(app)

    assert status["unpublished"] == "3"
    assert status["due now"] == "2"
    assert status["failing (last_error)"] == "1"
    assert status["published last minute"] == "3"
    age = status["oldest unpublished age"]
    assert age.endswith("s") and 120 <= float(age.removesuffix("s")) < 3600


def test_relay_status_of_an_empty_outbox_prints_a_dash_for_the_oldest_age(app: Flask) -> None:
    status = relay_status(app)

    assert status["unpublished"] == "0"
    assert status["oldest unpublished age"] == "-"
    assert status["published last minute"] == "0"
