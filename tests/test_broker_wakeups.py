"""The Redis broker's idle consumers are woken by an enqueue instead of waiting out their poll (real Redis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from dramatiq import Message

from infra.waking_redis import WakingRedisBroker
from jobs.broker import build_broker
from outbox.publisher import RedisPipelinePublisher
from settings import Settings
from tests.conftest import REDIS_URL
from tests.support.workers import fresh_queue

#: An idle poll this long would outlast any test: a message that arrives sooner was woken for.
LONG_POLL_MS = 120_000
#: How long a test waits for what a wake-up makes immediate, before calling it lost.
GIVE_UP_SECONDS = 15


@pytest.fixture
def broker_and_queue() -> Iterator[tuple[WakingRedisBroker, str]]:
    url, queue = fresh_queue("wake")
    broker = WakingRedisBroker(url=url, heartbeat_timeout=LONG_POLL_MS * 2)
    broker.declare_queue(queue)
    yield broker, queue
    broker.close()


def _message(queue: str) -> Message:
    return Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def test_the_project_broker_for_a_redis_url_is_the_waking_one() -> None:
    broker = build_broker(Settings(broker_url=REDIS_URL))
    assert isinstance(broker, WakingRedisBroker)
    plain = build_broker(Settings(broker_url=REDIS_URL, broker_wakeups=False))
    assert not isinstance(plain, WakingRedisBroker)


def test_an_idle_consumer_at_its_longest_backoff_is_woken_by_an_enqueue(broker_and_queue) -> None:
    broker, queue = broker_and_queue
    consumer = broker.consume(queue, prefetch=1, timeout=LONG_POLL_MS)
    consumer.misses = 32  # as after a long idle spell: the next wait is the full LONG_POLL_MS
    woken, fetched_empty = threading.Event(), threading.Event()
    fetch = broker.do_fetch

    def observed_fetch(*args: object) -> list:
        found = fetch(*args)
        if not found:
            fetched_empty.set()
        return found

    broker.do_fetch = observed_fetch  # type: ignore[method-assign]

    def idle_wait() -> None:
        assert next(consumer) is None  # an empty fetch, then the wait
        woken.set()

    waiter = threading.Thread(target=idle_wait, daemon=True)
    waiter.start()
    # Enqueue only after the empty fetch: sooner, the fetch would find the message and no wait
    # would be tested (the race this waits out was seen under a parallel run's load).
    assert fetched_empty.wait(GIVE_UP_SECONDS), "the consumer never fetched"
    broker.enqueue(_message(queue))
    assert woken.wait(GIVE_UP_SECONDS), "the enqueue did not end the consumer's idle wait"
    assert consumer.misses == 0  # the wake-up resets the backoff
    fetched = next(consumer)
    assert fetched is not None and fetched.queue_name == queue
    consumer.ack(fetched)
    consumer.close()


def test_the_relays_pipelined_publish_wakes_an_idle_consumer_in_the_same_round_trip(broker_and_queue) -> None:
    broker, queue = broker_and_queue
    url = broker.client.connection_pool.connection_kwargs
    publisher = RedisPipelinePublisher(f"redis://{url['host']}:{url['port']}/{url['db']}")
    consumer = broker.consume(queue, prefetch=1, timeout=LONG_POLL_MS)
    assert next(consumer, "empty") is None
    publisher.broker.enqueue(_message(queue))
    assert len(publisher.pipeline.command_stack) == 2  # the enqueue script and its PUBLISH, buffered together
    publisher.pipeline.execute()
    assert consumer._wait_for_wakeup(GIVE_UP_SECONDS) is True
    fetched = next(consumer)
    assert fetched is not None
    consumer.ack(fetched)
    consumer.close()
    publisher.close()


def test_a_burst_of_enqueues_is_one_wake_up_not_one_per_message(broker_and_queue) -> None:
    broker, queue = broker_and_queue
    consumer = broker.consume(queue, prefetch=5, timeout=LONG_POLL_MS)
    assert next(consumer, "empty") is None  # subscribed; the first empty fetch
    for _ in range(5):
        broker.enqueue(_message(queue))
    assert consumer._wait_for_wakeup(GIVE_UP_SECONDS) is True
    assert consumer._wait_for_wakeup(0) is False  # the other four wake-ups were drained with it
    fetched = [next(consumer) for _ in range(5)]
    assert all(m is not None for m in fetched)
    for m in fetched:
        consumer.ack(m)
    consumer.close()


def test_a_failed_wake_up_does_not_fail_the_enqueue(broker_and_queue, monkeypatch) -> None:
    broker, queue = broker_and_queue

    def refuse(*_args: object) -> None:
        raise redis.ConnectionError("publish refused")

    monkeypatch.setattr(broker.client, "publish", refuse)
    broker.enqueue(_message(queue))
    consumer = broker.consume(queue, prefetch=1, timeout=100)
    fetched = next(consumer)  # the message is in Redis: only the wake-up was lost
    assert fetched is not None
    consumer.ack(fetched)
    consumer.close()


def test_an_idle_consumer_without_enqueues_still_fetches_once_per_backoff(broker_and_queue) -> None:
    # Each fetch refreshes the broker's heartbeat: a waiting consumer must not look dead.
    broker, queue = broker_and_queue
    consumer = broker.consume(queue, prefetch=1, timeout=50)
    fetches = 0
    real_fetch = broker.do_fetch

    def counting_fetch(*args: object) -> list[bytes]:
        nonlocal fetches
        fetches += 1
        return real_fetch(*args)

    broker.do_fetch = counting_fetch
    assert [next(consumer) for _ in range(3)] == [None, None, None]
    assert fetches == 3
    consumer.close()
