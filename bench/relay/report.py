"""The relay benchmark's report: the machine and options, the throughput table, the latency table."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence

from bench.relay.environment import QUEUE, Environment
from bench.relay.latency import LatencyResult
from bench.relay.throughput import ThroughputResult
from harness.stats import percentile

Out = Callable[[str], object]


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _table_header(out: Out, header: str) -> None:
    """The header line and a rule as long as it."""
    out(header)
    out("  " + "-" * (len(header) - 3) + "\n")


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
        print_throughput(out, args, throughput)
    if latency:
        print_latency(out, args, latency)
    out("\n")
    sys.stdout.flush()


def print_throughput(out: Out, args: argparse.Namespace, throughput: Sequence[ThroughputResult]) -> None:
    out(f"\nThroughput: {args.messages:,} messages, kwargs payload of 4 fields, queue {QUEUE!r}, same Redis\n")
    _table_header(out, f"  {'method':<38}{'seconds':>9}{'msg/s':>10}{'bench CPU s':>13}{'PG ours s':>11}"
                       f"{'PG all s':>10}{'Redis s':>9}{'CPU ms/msg':>12}  note\n")
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


def print_latency(out: Out, args: argparse.Namespace, latency: Sequence[LatencyResult]) -> None:
    out(
        f"\nLatency commit -> actor: {args.latency_messages:,} messages, one per transaction, "
        f"at {args.rate:g}/s; dramatiq.Worker in this process,\n  {args.worker_threads} threads, "
        f"worker_timeout {args.worker_timeout_ms} ms (the Redis consumer's idle poll backs off up to "
        f"this); relay batch {args.batch}\n"
    )
    _table_header(out, f"  {'mode':<42}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'p50 pre':>9}"
                       f"{'recv':>7}{'dup':>5}{'rate/s':>8}{'batches':>9}{'wakes':>7}{'CPU ms/msg':>12}\n")
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
