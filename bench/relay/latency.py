"""Latency, commit to actor: a producer commits outbox rows at a steady rate and a real
dramatiq.Worker in this process stamps when each one arrives; naive, NOTIFY and poll-only."""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.relay.environment import ACTOR, QUEUE, CountingPublisher, Environment, payload_for, reset
from bench.relay.meter import CpuSpent
from harness.relay_thread import RelayThread
from harness.waiters import WatchedWaiter
from outbox.publisher import RedisPipelinePublisher
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from outbox.writer import enqueue

#: How long the latency run waits for the last messages after the producer stops.
DRAIN_TIMEOUT_SECONDS = 15.0
#: The relay's fallback poll while it LISTENs (it wakes on NOTIFY long before).
NOTIFY_POLL_INTERVAL_SECONDS = 1.0

log = logging.getLogger("bench.relay")


@dataclass
class Inbox:
    """What the worker's actor saw: (message key, receive time, payload's pre-commit stamp)."""

    received: list[tuple[str, float, float]] = field(default_factory=list)

    def record(self, exchange_id: str, sent_at: float) -> None:
        self.received.append((exchange_id, time.time(), sent_at))  # list.append is atomic


@dataclass(frozen=True)
class LatencyResult:
    label: str
    sent: int
    received: int
    duplicates: int
    after_commit_ms: list[float]
    before_commit_ms: list[float]
    achieved_rate: float
    cpu: CpuSpent
    batches: int | None = None
    wakeups: int | None = None


def produce(
    env: Environment, count: int, rate: float, after_commit: Callable[[uuid.UUID, dict[str, Any]], None]
) -> tuple[dict[str, float], float]:
    """Commit one outbox row per transaction at `rate`; returns commit times by key and the achieved rate.

    The commit time is taken just after `commit()` returns and kept here, keyed by id,
    because it cannot be put in the row it is the commit time of. The payload also carries
    `time.time()` taken before the commit, which overstates latency by the commit's duration.
    """
    committed: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        message_id = uuid.uuid4()
        payload = payload_for(message_id, time.time())
        with env.engine.begin() as conn:
            enqueue(conn, actor=ACTOR, queue=QUEUE, payload=payload, message_id=message_id)
        committed[payload["exchange_id"]] = time.time()
        after_commit(message_id, payload)
    return committed, count / (time.perf_counter() - start)


def start_relay(relay_factory: Callable[[], Relay] | None) -> RelayThread | None:
    """The relay in a thread, once its first wait() has opened its LISTEN connection."""
    if relay_factory is None:
        return None
    thread = RelayThread(relay_factory(), name="bench-relay").start()
    waiter = thread.relay.waiter
    deadline = time.monotonic() + 5
    while isinstance(waiter, WatchedWaiter) and not waiter.waits and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    return thread


def bench_latency(
    env: Environment,
    inbox: Inbox,
    *,
    label: str,
    count: int,
    rate: float,
    relay_factory: Callable[[], Relay] | None,
    send: Callable[..., Any] | None = None,
) -> LatencyResult:
    """Produce `count` messages; with a relay they go through the outbox, without it `send` follows each commit."""
    reset(env)
    inbox.received.clear()
    thread = start_relay(relay_factory)
    before = env.meter.sample()

    def after_commit(_message_id: uuid.UUID, payload: dict[str, Any]) -> None:
        if send is not None:
            send(**payload)

    committed, achieved = produce(env, count, rate, after_commit)
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while len({key for key, _, _ in inbox.received if key in committed}) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    cpu = CpuSpent.between(before, env.meter.sample())
    batches = wakeups = None
    if thread is not None:
        # Counted before stop(), whose interrupt may count as one more wake-up.
        if isinstance(thread.relay.publisher, CountingPublisher):
            batches = thread.relay.publisher.batches
        if isinstance(thread.relay.waiter, WatchedWaiter):
            wakeups = thread.relay.waiter.wakeups
        thread.stop()
        if thread.error is not None:
            log.error("the relay died during the run: %r", thread.error)
    return summarise(inbox, committed, label=label, count=count, achieved=achieved, cpu=cpu, batches=batches,
                     wakeups=wakeups)


def summarise(inbox: Inbox, committed: dict[str, float], *, label: str, count: int, achieved: float, cpu: CpuSpent,
              batches: int | None, wakeups: int | None) -> LatencyResult:
    """The first delivery of each committed message, against its commit and its pre-commit stamp."""
    mine = [item for item in inbox.received if item[0] in committed]  # nothing left over from before
    first: dict[str, tuple[float, float]] = {}
    for key, received_at, sent_at in mine:
        first.setdefault(key, (received_at, sent_at))
    after = sorted((received - committed[key]) * 1000 for key, (received, _) in first.items())
    before_commit = sorted((received - sent) * 1000 for received, sent in first.values())
    return LatencyResult(label=label, sent=count, received=len(first), duplicates=len(mine) - len(first),
                         after_commit_ms=after, before_commit_ms=before_commit, achieved_rate=achieved, cpu=cpu,
                         batches=batches, wakeups=wakeups)


def relay_factory(env: Environment, args: argparse.Namespace, waiter: Callable[[], Waiter], poll_seconds: float,
                  coalesce_seconds: float) -> Callable[[], Relay]:
    def build() -> Relay:
        config = RelayConfig(batch_size=args.batch, poll_interval_seconds=poll_seconds,
                             coalesce_seconds=coalesce_seconds)
        publisher = CountingPublisher(RedisPipelinePublisher(env.redis_url))
        return Relay(env.engine, publisher, config, waiter=WatchedWaiter(waiter()), name="bench-relay")

    return build


def run_latency(env: Environment, args: argparse.Namespace) -> list[LatencyResult]:
    inbox = Inbox()
    broker = RedisBroker(url=env.redis_url)

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
    def step(exchange_id: str, step: str, attempt: int, sent_at: float) -> None:
        inbox.record(exchange_id, sent_at)

    worker = dramatiq.Worker(broker, worker_threads=args.worker_threads, worker_timeout=args.worker_timeout_ms)
    reset(env)  # the throughput run's messages must not reach this worker
    worker.start()
    common = {"count": args.latency_messages, "rate": args.rate}
    results = []
    try:
        results.append(bench_latency(env, inbox, label="naive: commit, then actor.send", relay_factory=None,
                                     send=step.send, **common))
        for coalesce_ms in args.coalesce_ms:
            results.append(bench_latency(
                env, inbox, label=f"relay, LISTEN/NOTIFY, coalesce {coalesce_ms:g} ms",
                relay_factory=relay_factory(env, args, lambda: ListenWaiter(env.engine), NOTIFY_POLL_INTERVAL_SECONDS,
                                            coalesce_ms / 1000),
                **common))
        results.append(bench_latency(
            env, inbox, label=f"relay, poll only every {args.poll_interval_ms:g} ms",
            relay_factory=relay_factory(env, args, PollWaiter, args.poll_interval_ms / 1000, 0.0), **common))
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    return results
