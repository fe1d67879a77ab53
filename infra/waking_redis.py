"""A Redis broker whose idle consumers are woken by each enqueue instead of sleeping out a poll.

Dramatiq's Redis consumer, finding its queue empty, sleeps with a backoff of up to
`worker_timeout` before fetching again: every hop then waits for the next poll (shared/README.md),
and a short timeout buys latency with idle fetches. Here each enqueue also PUBLISHes on a channel
per queue, and the idle consumer waits on that channel for the same backoff: a message is fetched
as soon as it is enqueued, and an idle consumer polls no more often than Dramatiq's does. The
fetch still runs at least once per backoff, so the broker's heartbeat (refreshed by each fetch)
never lapses while a consumer waits.
"""

from __future__ import annotations

import time

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed


def wake_channel(namespace: str, queue_name: str) -> str:
    return f"{namespace}:wake:{queue_name}"


class WakingRedisBroker(RedisBroker):
    """RedisBroker plus one PUBLISH per enqueue, which wakes the queue's idle consumers."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        enqueued = super().enqueue(message, delay=delay)
        # A wake-up lost to a dropped connection costs one poll interval, never a message:
        # the message is already in Redis, so this failure must not fail the enqueue.
        try:
            self.client.publish(wake_channel(self.namespace, enqueued.queue_name), b"")
        except redis.RedisError:
            self.logger.warning("Could not wake consumers of %r.", enqueued.queue_name, exc_info=True)
        return enqueued


class _WakingConsumer(_RedisConsumer):
    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        # Subscribed before the first fetch, so an enqueue between an empty fetch and the wait
        # is already buffered on this connection: no wake-up is lost to that race.
        self._wakeups = broker.client.pubsub()
        try:
            self._wakeups.subscribe(wake_channel(broker.namespace, queue_name))
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def __next__(self) -> MessageProxy | None:
        if self.message_cache or self.outstanding_message_count >= self.prefetch:
            return super().__next__()
        try:
            self.message_cache = self.broker.do_fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
            if self.message_cache:
                return super().__next__()
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            if self._wait_for_wakeup(backoff_ms / 1000):
                self.misses = 0
            return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _wait_for_wakeup(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an enqueue on this queue; True if one came."""
        deadline = time.monotonic() + timeout
        woken = False
        while not woken:
            remaining = deadline - time.monotonic()
            message = self._wakeups.get_message(timeout=max(remaining, 0.0))
            woken = message is not None and message["type"] == "message"
            if not woken and remaining <= 0:
                return False
        # A burst of enqueues is one fetch, not one per message.
        while self._wakeups.get_message(timeout=0) is not None:
            pass
        return True

    def close(self) -> None:
        try:
            self._wakeups.close()
        finally:
            super().close()
