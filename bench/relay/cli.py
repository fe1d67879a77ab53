"""Relay benchmark: throughput against a plain `actor.send` loop, and commit-to-consumer latency.

Run with `.venv/bin/python -m bench.relay` (or `make bench-relay`). It creates its own
PostgreSQL database and uses a Redis database of its own (flushed), and drops / flushes
both at the end. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from bench.relay.environment import REDIS_URL, environment
from bench.relay.latency import run_latency
from bench.relay.report import print_report
from bench.relay.throughput import ThroughputResult, bench_relay_throughput, bench_send_throughput
from harness.databases import POSTGRES_ADMIN_URL


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
