"""Relay benchmark: throughput against a plain `actor.send` loop, and commit-to-consumer latency.

Run with `.venv/bin/python -m bench.relay` (or `make bench-relay`). It creates its own
PostgreSQL database and uses a Redis database of its own (flushed), and drops / flushes
both at the end. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

import migrate
from database import make_engine
from models import outbox_messages
from models.base import utcnow
from outbox.publisher import Publisher, RedisPipelinePublisher
from outbox.relay import Relay, RelayConfig
from outbox.store import OutboxRow
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from outbox.writer import enqueue

POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
QUEUE = "bench_relay"
ACTOR = "bench_step"
#: Rows per executemany when filling the outbox for the throughput run.
INSERT_CHUNK_ROWS = 5_000
#: How long the latency run waits for the last messages after the producer stops.
DRAIN_TIMEOUT_SECONDS = 15.0
#: The relay's fallback poll while it LISTENs (it wakes on NOTIFY long before).
NOTIFY_POLL_INTERVAL_SECONDS = 1.0

log = logging.getLogger("bench.relay")


def payload_for(message_id: uuid.UUID, sent_at: float) -> dict[str, Any]:
    """The kwargs of every message, relayed or sent: the shape of an exchange step."""
    return {"exchange_id": str(message_id), "step": "quote", "attempt": 1, "sent_at": sent_at}


# --------------------------------------------------------------------------- CPU accounting


def _postgres_processes() -> dict[int, tuple[str, float]]:
    """Title and CPU seconds (utime + stime) by pid of the local processes named `postgres` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    processes = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        name_end = stat.rfind(")")
        if stat[stat.find("(") + 1 : name_end] != "postgres":
            continue
        fields = stat[name_end + 2 :].split()
        processes[int(entry.name)] = (title, (int(fields[11]) + int(fields[12])) / ticks)  # stat fields 14, 15
    return processes


def _cpu_spent(after: dict[int, float] | None, before: dict[int, float] | None) -> float | None:
    """CPU spent between two samples by the processes alive at the second one (those that exited are lost)."""
    if after is None or before is None:
        return None
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass(frozen=True)
class CpuSample:
    wall: float
    process: float
    redis_server: float
    pg_ours_by_pid: dict[int, float] | None = None
    pg_server_by_pid: dict[int, float] | None = None


@dataclass(frozen=True)
class CpuSpent:
    wall: float
    process: float
    redis_server: float
    pg_ours: float | None
    pg_server: float | None

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample) -> CpuSpent:
        return cls(
            wall=after.wall - before.wall,
            process=after.process - before.process,
            redis_server=after.redis_server - before.redis_server,
            pg_ours=_cpu_spent(after.pg_ours_by_pid, before.pg_ours_by_pid),
            pg_server=_cpu_spent(after.pg_server_by_pid, before.pg_server_by_pid),
        )

    @property
    def total(self) -> float:
        """This process + our PostgreSQL backends + the Redis server."""
        return self.process + (self.pg_ours or 0.0) + self.redis_server


class CpuMeter:
    """Samples wall time, this process's CPU, PostgreSQL's (our backends / whole server) and Redis's.

    PostgreSQL backends show their database in the process title, so ours can be told
    from those of tests running beside the benchmark. Redis reports only its whole server.
    """

    def __init__(self, database: str, client: redis.Redis, postgres_is_local: bool) -> None:
        self.marker = f" {database} "
        self.client = client
        self.postgres_is_local = postgres_is_local and os.path.isdir("/proc")

    def sample(self) -> CpuSample:
        info = self.client.info("cpu")
        wall, process = time.perf_counter(), time.process_time()
        if not self.postgres_is_local:
            return CpuSample(wall, process, float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
        postgres = _postgres_processes()
        return CpuSample(
            wall=wall,
            process=process,
            redis_server=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            pg_ours_by_pid={pid: cpu for pid, (title, cpu) in postgres.items() if self.marker in title},
            pg_server_by_pid={pid: cpu for pid, (_, cpu) in postgres.items()},
        )


# --------------------------------------------------------------------------- set-up and clean-up


@dataclass
class Environment:
    url: str
    database: str
    engine: Engine
    redis_url: str
    redis: redis.Redis
    meter: CpuMeter
    versions: str


@contextmanager
def environment(admin_url: str, redis_url: str) -> Iterator[Environment]:
    """A fresh, migrated PostgreSQL database and an empty Redis database; both removed afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"fx_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        pg_version = conn.execute(text("SHOW server_version")).scalar()
    client = redis.Redis.from_url(redis_url)
    engine: Engine | None = None
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url, pool_size=10, max_overflow=10)
        migrate.upgrade(engine)
        client.flushdb()
        host = make_url(admin_url).host or "localhost"
        versions = (
            f"Python {platform.python_version()}, dramatiq {dramatiq.__version__}, "
            f"PostgreSQL {pg_version}, Redis {client.info('server')['redis_version']}"
        )
        yield Environment(
            url=url,
            database=name,
            engine=engine,
            redis_url=redis_url,
            redis=client,
            meter=CpuMeter(name, client, postgres_is_local=host in {"127.0.0.1", "localhost", "::1"}),
            versions=versions,
        )
    finally:
        if engine is not None:
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        client.flushdb()
        client.close()


def reset(env: Environment) -> None:
    with env.engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox_messages"))
    env.redis.flushdb()


def queue_length(env: Environment) -> int:
    return int(env.redis.llen(f"dramatiq:{QUEUE}"))


class CountingPublisher:
    """Counts batches around the real publisher."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.batches = 0
        self.messages = 0

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        self.inner.publish(rows)
        self.batches += 1
        self.messages += len(rows)

    def close(self) -> None:
        self.inner.close()


class CountingWaiter:
    """Counts wake-ups (NOTIFY) and waits around the real waiter."""

    def __init__(self, inner: Waiter) -> None:
        self.inner = inner
        self.waits = 0
        self.wakeups = 0

    def wait(self, timeout_seconds: float) -> bool:
        self.waits += 1
        woken = self.inner.wait(timeout_seconds)
        self.wakeups += woken
        return woken

    def prepare(self) -> None:
        self.inner.prepare()

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------- throughput


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
    with env.engine.connect() as conn:
        left = conn.execute(select(func.count()).where(outbox_messages.c.published_at.is_(None))).scalar()
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


# --------------------------------------------------------------------------- latency


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


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


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
    relay = relay_factory() if relay_factory else None
    thread = None
    if relay is not None:
        thread = threading.Thread(target=relay.run, name="bench-relay", daemon=True)
        thread.start()
        waiter = relay.waiter
        deadline = time.monotonic() + 5
        while isinstance(waiter, CountingWaiter) and not waiter.waits and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # let the first wait() open its LISTEN connection
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
    if relay is not None and thread is not None:
        # Counted before stop(), whose interrupt may count as one more wake-up.
        if isinstance(relay.publisher, CountingPublisher):
            batches = relay.publisher.batches
        if isinstance(relay.waiter, CountingWaiter):
            wakeups = relay.waiter.wakeups
        relay.stop()
        thread.join(timeout=10)
        relay.publisher.close()
        if relay.waiter is not None:
            relay.waiter.close()
    mine = [item for item in inbox.received if item[0] in committed]  # nothing left over from before
    first: dict[str, tuple[float, float]] = {}
    for key, received_at, sent_at in mine:
        first.setdefault(key, (received_at, sent_at))
    after = sorted((received - committed[key]) * 1000 for key, (received, _) in first.items())
    before_commit = sorted((received - sent) * 1000 for received, sent in first.values())
    return LatencyResult(
        label=label,
        sent=count,
        received=len(first),
        duplicates=len(mine) - len(first),
        after_commit_ms=after,
        before_commit_ms=before_commit,
        achieved_rate=achieved,
        cpu=cpu,
        batches=batches,
        wakeups=wakeups,
    )


def run_latency(env: Environment, args: argparse.Namespace) -> list[LatencyResult]:
    inbox = Inbox()
    broker = RedisBroker(url=env.redis_url)

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
    def step(exchange_id: str, step: str, attempt: int, sent_at: float) -> None:
        inbox.record(exchange_id, sent_at)

    worker = dramatiq.Worker(broker, worker_threads=args.worker_threads, worker_timeout=args.worker_timeout_ms)
    reset(env)  # the throughput run's messages must not reach this worker
    worker.start()

    def relay_factory(
        waiter: Callable[[], Waiter], poll_seconds: float, coalesce_seconds: float
    ) -> Callable[[], Relay]:
        def build() -> Relay:
            config = RelayConfig(
                batch_size=args.batch, poll_interval_seconds=poll_seconds, coalesce_seconds=coalesce_seconds
            )
            publisher = CountingPublisher(RedisPipelinePublisher(env.redis_url))
            return Relay(env.engine, publisher, config, waiter=CountingWaiter(waiter()), name="bench-relay")

        return build

    common = {"count": args.latency_messages, "rate": args.rate}
    results = []
    try:
        results.append(
            bench_latency(
                env, inbox, label="naive: commit, then actor.send", relay_factory=None, send=step.send, **common
            )
        )
        for coalesce_ms in args.coalesce_ms:
            results.append(
                bench_latency(
                    env,
                    inbox,
                    label=f"relay, LISTEN/NOTIFY, coalesce {coalesce_ms:g} ms",
                    relay_factory=relay_factory(
                        lambda: ListenWaiter(env.engine), NOTIFY_POLL_INTERVAL_SECONDS, coalesce_ms / 1000
                    ),
                    **common,
                )
            )
        results.append(
            bench_latency(
                env,
                inbox,
                label=f"relay, poll only every {args.poll_interval_ms:g} ms",
                relay_factory=relay_factory(PollWaiter, args.poll_interval_ms / 1000, 0.0),
                **common,
            )
        )
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    return results


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_report(
    env: Environment, args: argparse.Namespace, throughput: list[ThroughputResult], latency: list[LatencyResult]
) -> None:
    out = sys.stdout.write
    out("\nOutbox relay benchmark\n")
    out(f"  machine: {os.cpu_count()} cores (os.cpu_count()), {platform.platform()}\n")
    out(f"  {env.versions}\n")
    out(
        f"  options: --messages {args.messages} --batch {args.batch} --latency-messages {args.latency_messages} "
        f"--rate {args.rate:g} --poll-interval-ms {args.poll_interval_ms:g} "
        f"--coalesce-ms {','.join(f'{c:g}' for c in args.coalesce_ms)} --worker-threads {args.worker_threads} "
        f"--worker-timeout-ms {args.worker_timeout_ms}\n"
    )
    out(
        "  CPU columns: 'bench' = time.process_time() of this process; 'PG ours' = our database's backends "
        "(from /proc);\n  'PG all' = every PostgreSQL process (includes anything else running); "
        "'Redis' = the whole Redis server (INFO cpu).\n"
    )
    if throughput:
        out(f"\nThroughput: {args.messages:,} messages, kwargs payload of 4 fields, queue {QUEUE!r}, same Redis\n")
        header = (
            f"  {'method':<38}{'seconds':>9}{'msg/s':>10}{'bench CPU s':>13}{'PG ours s':>11}"
            f"{'PG all s':>10}{'Redis s':>9}{'CPU ms/msg':>12}  note\n"
        )
        out(header)
        out("  " + "-" * (len(header) - 3) + "\n")
        for r in throughput:
            out(
                f"  {r.label:<38}{r.cpu.wall:>9.2f}{r.rate:>10,.0f}{r.cpu.process:>13.2f}{_fmt(r.cpu.pg_ours):>11}"
                f"{_fmt(r.cpu.pg_server):>10}{r.cpu.redis_server:>9.2f}{r.cpu.total * 1000 / r.messages:>12.3f}"
                f"  {r.note}\n"
            )
        by_label = {r.label.split()[0]: r for r in throughput}
        if "Relay.run_once" in by_label and "actor.send" in by_label:
            ratio = by_label["Relay.run_once"].rate / by_label["actor.send"].rate
            verdict = "meets" if ratio >= 1.0 else "MISSES"
            out(f"  ratio relay / send: {ratio:.2f}x  ({verdict} the target >= 1.0x)\n")
    if latency:
        out(
            f"\nLatency commit -> actor: {args.latency_messages:,} messages, one per transaction, "
            f"at {args.rate:g}/s; dramatiq.Worker in this process,\n  {args.worker_threads} threads, "
            f"worker_timeout {args.worker_timeout_ms} ms (the Redis consumer's idle poll backs off up to "
            f"this); relay batch {args.batch}\n"
        )
        header = (
            f"  {'mode':<42}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'p50 pre':>9}"
            f"{'recv':>7}{'dup':>5}{'rate/s':>8}{'batches':>9}{'wakes':>7}{'CPU ms/msg':>12}\n"
        )
        out(header)
        out("  " + "-" * (len(header) - 3) + "\n")
        for r in latency:
            a = r.after_commit_ms
            out(
                f"  {r.label:<42}{percentile(a, 0.5):>8.2f}{percentile(a, 0.9):>8.2f}{percentile(a, 0.99):>8.2f}"
                f"{(a[-1] if a else float('nan')):>8.1f}{percentile(r.before_commit_ms, 0.5):>9.2f}"
                f"{r.received:>7}{r.duplicates:>5}{r.achieved_rate:>8.0f}{_fmt(r.batches, 'd'):>9}"
                f"{_fmt(r.wakeups, 'd'):>7}{r.cpu.total * 1000 / r.sent:>12.3f}\n"
            )
        out(
            "  p50/p90/p99/max: receive time in the actor minus time.time() just after commit() returned.\n"
            "  p50 pre: the same against the stamp taken before the commit and carried in the payload.\n"
            "  CPU ms/msg: (bench + PG ours + Redis) CPU over the run / messages; includes the idle polling of\n"
            "  the worker (consumer + worker threads wake every worker_timeout) and of the relay.\n"
        )
        notify = [r for r in latency if "NOTIFY" in r.label]
        if notify:
            best = min(percentile(r.after_commit_ms, 0.5) for r in notify)
            verdict = "meets" if best < 10 else "MISSES"
            out(f"  best p50 with NOTIFY: {best:.2f} ms ({verdict} the target < 10 ms)\n")
    out("\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="throughput run size (default 50000)")
    parser.add_argument("--batch", type=int, default=500, help="relay batch size (default 500)")
    parser.add_argument("--rate", type=float, default=200.0, help="latency producer, commits/s (default 200)")
    parser.add_argument("--latency-messages", type=int, default=2_000, help="per latency mode (default 2000)")
    parser.add_argument("--poll-interval-ms", type=float, default=100.0, help="poll-only relay (default 100)")
    parser.add_argument(
        "--coalesce-ms",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.0, 2.0],
        help="RelayConfig.coalesce_seconds values to try with NOTIFY, in ms (default 0,2)",
    )
    parser.add_argument("--worker-threads", type=int, default=4, help="dramatiq worker threads (default 4)")
    parser.add_argument("--worker-timeout-ms", type=int, default=5, help="dramatiq worker_timeout (default 5)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_ADMIN_URL,
        help="admin database URL; a fx_bench_* database is created beside it",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis database of its own: it is FLUSHED")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.batch < 1 or args.rate <= 0 or args.latency_messages < 1:
        parser.error("--messages, --batch, --latency-messages and --rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with environment(args.postgres_url, args.redis_url) as env:
        throughput: list[ThroughputResult] = []
        if not args.skip_throughput:
            throughput.append(bench_send_throughput(env, args.messages))
            throughput.append(bench_relay_throughput(env, args.messages, args.batch))
        latency = [] if args.skip_latency else run_latency(env, args)
        print_report(env, args, throughput, latency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
