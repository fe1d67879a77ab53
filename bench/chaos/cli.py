"""Chaos run: the real topology under kill -9, bank timeouts, a Redis restart and dropped connections.

    .venv/bin/python -m bench.chaos [--exchanges 1000] [--seed 1] [--design outbox|naive|both]

It creates its own PostgreSQL database and a private redis-server, starts every process of
the design (gunicorn, relays, Dramatiq workers, reconciler, bank), drives exchanges through
the HTTP API while injecting faults on a schedule, stops the faults, waits for quiescence
and prints the money invariants. The exit status is non-zero if an invariant of our design
fails (with `--design naive` alone: if one of the naive design's fails, as it does).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.chaos.faults import FaultPlan
from bench.chaos.report import print_report
from bench.chaos.run import run_design
from harness.databases import POSTGRES_ADMIN_URL


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--exchanges", type=int, default=1_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--design", choices=("outbox", "naive", "both"), default="outbox",
                   help="ours (default), the seeds' naive design, or both side by side")
    p.add_argument("--accounts", type=int, default=8)
    p.add_argument("--threads", type=int, default=8, help="load generator threads")
    p.add_argument("--relays", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="dramatiq processes (each --processes 1)")
    p.add_argument("--worker-threads", type=int, default=4)
    p.add_argument("--kill-every", type=float, default=3.0, help="seconds between kill -9 of a relay or worker")
    p.add_argument("--fault-seconds", type=float, default=30.0,
                   help="faults last this long at least, and while the load runs (default 30)")
    p.add_argument("--rate", type=float, default=None,
                   help="exchanges POSTed per second (default: spread over --fault-seconds)")
    p.add_argument("--redis-restart-at", type=float, default=7.0, help="seconds into the faults; negative: none")
    p.add_argument("--pg-terminations", type=int, default=3)
    p.add_argument("--timeout-rate", type=float, default=0.2, help="bank: timeout after applying")
    p.add_argument("--error-rate", type=float, default=0.05, help="bank: 503 before applying")
    p.add_argument("--deadline", type=float, default=None, help="seconds to wait for quiescence")
    p.add_argument("--stall-seconds", type=float, default=20.0,
                   help="naive design: give up waiting once nothing moved this long with empty queues")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (always kept on failure)")
    p.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL,
                   help="admin database URL; a fx_chaos_* database is created beside it (env BENCH_POSTGRES_URL)")
    args = p.parse_args(argv)
    if args.exchanges < 1 or args.accounts < 1 or args.threads < 1:
        p.error("--exchanges, --accounts and --threads must be positive")
    return args


def plan_from(args: argparse.Namespace) -> FaultPlan:
    return FaultPlan(kill_every_seconds=args.kill_every, min_fault_seconds=args.fault_seconds,
                     redis_restart_at_seconds=None if args.redis_restart_at < 0 else args.redis_restart_at,
                     pg_terminations=args.pg_terminations, timeout_after_apply_rate=args.timeout_rate,
                     error_rate=args.error_rate)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    designs = ["outbox", "naive"] if args.design == "both" else [args.design]
    outcomes = [run_design(name, args, plan) for name in designs]
    print_report(outcomes, args, plan)
    judged = [o for o in outcomes if o.design == "outbox"] or outcomes
    return 0 if all(o.ok for o in judged) else 1
