"""End-to-end benchmark: exchanges through the full topology, as separate processes, with a fault-free bank.

    .venv/bin/python -m bench.e2e [--exchanges 3000] [--rate 10] [--latency-seconds 30] [--web-only 2000]

Phases, each on the same topology (gunicorn, 2 relays, 2 Dramatiq processes, reconciler, bank):
1. web only: POST /api/exchanges flat out with only gunicorn (and the bank) running: requests/s;
2. drain: relays, workers and reconciler start and work off that backlog: exchanges/s;
3. latency: a steady `--rate` of POSTs for `--latency-seconds`: HTTP accept (the 202) to completed;
4. flat out: `--exchanges` POSTed as fast as the API accepts them while the workers run:
   exchanges completed per second, and CPU ms per exchange across every process.
CPU is read from /proc (utime + stime) for every process of the topology, the PostgreSQL
backends of its database and its redis-server. `--profile DIR` samples every Python process
with py-spy during phase 4 and summarises where the CPU goes; `--design naive` measures
bench/naive.py the same way, `--design both` the two back to back with one side-by-side
table (`make bench-e2e`); `--set NAME=VALUE` tries another setting (e.g. RELAY_COALESCE_MS).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench.e2e.compare import print_comparison
from bench.e2e.report import print_report
from bench.e2e.run import run
from harness.databases import POSTGRES_ADMIN_URL


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    p.add_argument("--exchanges", type=int, default=3_000, help="flat-out phase (default 3000)")
    p.add_argument("--web-only", type=int, default=2_000, help="POSTs with only the web running (default 2000)")
    p.add_argument("--rate", type=float, default=10.0, help="steady phase, exchanges/s (default 10)")
    p.add_argument("--latency-seconds", type=float, default=30.0)
    p.add_argument("--accounts", type=int, default=16)
    p.add_argument("--threads", type=int, default=8, help="load generator threads")
    p.add_argument("--relays", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--design", choices=("outbox", "naive", "both"), default="outbox",
                   help="ours (default), bench/naive.py measured the same way, or both back to back "
                        "with one side-by-side table")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="override a setting of every process (repeatable), e.g. --set RELAY_COALESCE_MS=5")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="sample every Python process with py-spy during the flat-out phase; stacks go to DIR")
    p.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL,
                   help="admin database URL; a fx_e2e_* database is created beside it (env BENCH_POSTGRES_URL)")
    args = p.parse_args(argv)
    try:
        args.settings = dict(item.split("=", 1) for item in args.settings)
    except ValueError:
        p.error("--set takes NAME=VALUE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.design != "both":
        phases, topo, profile = run(args)
        print_report(phases, topo, args, profile)
        return 0
    runs = {}
    for design in ("outbox", "naive"):  # one after the other: never two benchmarks at once
        one = argparse.Namespace(**{**vars(args), "design": design})
        phases, topo, profile = run(one)
        print_report(phases, topo, one, profile)
        runs[design] = phases
    print_comparison(runs["outbox"], runs["naive"])
    return 0
