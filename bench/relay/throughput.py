"""Throughput: a Relay draining a full outbox with `run_once()`, against a plain `actor.send` loop."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import insert, text

from bench.relay.environment import ACTOR, QUEUE, CountingPublisher, Environment, payload_for, queue_length, reset
from bench.relay.meter import CpuSpent
from harness.outcome import unpublished_total
from models import outbox_messages
from models.base import utcnow
from outbox.publisher import RedisPipelinePublisher
from outbox.relay import Relay, RelayConfig

#: Rows per executemany when filling the outbox for the throughput run.
INSERT_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class ThroughputResult:
    label: str
    messages: int
    cpu: CpuSpent
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.cpu.wall


def fill_outbox(env: Environment, count: int) -> None:
    now = utcnow()
    rows = []
    for _ in range(count):
        message_id = uuid.uuid4()
        rows.append(
            {
                "id": message_id,
                "queue": QUEUE,
                "actor": ACTOR,
                "payload": payload_for(message_id, time.time()),
                "created_at": now,
                "available_at": now,
                "attempts": 0,
                "trace_headers": None,
            }
        )
    statement = insert(outbox_messages)
    for start in range(0, count, INSERT_CHUNK_ROWS):
        with env.engine.begin() as conn:
            conn.execute(statement, rows[start : start + INSERT_CHUNK_ROWS])
    with env.engine.begin() as conn:  # what autovacuum would soon do after such an insert
        conn.execute(text("ANALYZE outbox_messages"))


def bench_relay_throughput(env: Environment, count: int, batch: int) -> ThroughputResult:
    reset(env)
    publisher = CountingPublisher(RedisPipelinePublisher(env.redis_url))
    relay = Relay(env.engine, publisher, RelayConfig(batch_size=batch))
    relay.run_once()  # warm: pool connection, statement caches, Lua scripts
    publisher.inner.publish([])
    fill_outbox(env, count)
    before = env.meter.sample()
    published = 0
    while (result := relay.run_once()).published:
        published += result.published
    cpu = CpuSpent.between(before, env.meter.sample())
    publisher.close()
    left = unpublished_total(env.engine)
    queued = queue_length(env)
    if published != count or left or queued != count:
        raise SystemExit(f"relay run inconsistent: published {published}, left {left}, queued {queued}")
    return ThroughputResult(f"Relay.run_once loop (batch {batch})", published, cpu, f"{publisher.batches} batches")


def bench_send_throughput(env: Environment, count: int) -> ThroughputResult:
    reset(env)
    broker = RedisBroker(url=env.redis_url)  # default middleware, as an application has it

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name=ACTOR)
    def step(**kwargs: Any) -> None:  # never runs here: no worker consumes this broker
        pass

    step.send(**payload_for(uuid.uuid4(), time.time()))  # warm: connection, Lua scripts
    env.redis.flushdb()
    payloads = [payload_for(uuid.uuid4(), time.time()) for _ in range(count)]
    before = env.meter.sample()
    for payload in payloads:
        step.send(**payload)
    cpu = CpuSpent.between(before, env.meter.sample())
    queued = queue_length(env)
    broker.close()
    if queued != count:
        raise SystemExit(f"send loop inconsistent: queued {queued} of {count}")
    return ThroughputResult("actor.send loop (RedisBroker)", count, cpu, "1 round trip each")
