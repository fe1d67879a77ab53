"""The end-to-end benchmark's four phases on one topology (see bench/e2e/cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.e2e.phases import Phase, Window, accepted_ids, latencies, server_latencies, wait_finished
from bench.e2e.profile import Profiler
from bench.load import FUNDING, LoadGenerator, Submission
from harness.cpu import CpuMeter
from harness.designs import BENCH_ENV, DESIGNS, Layout
from harness.provision import Provisioned, api_keys, cpu_meter, open_accounts, provisioned

#: The reconciler at its production timings: its pass reads every bank transfer, and at the
#: chaos run's 2 s it would be measured more than the exchanges are.
E2E_ENV = {**BENCH_ENV, "STUCK_AFTER_SECONDS": "120", "RECONCILE_INTERVAL_SECONDS": "30"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Run:
    """What the phases share: the topology, its CPU meter, the load generator, the next request's index."""

    args: argparse.Namespace
    topo: Provisioned
    meter: CpuMeter
    load: LoadGenerator
    index: int = 0

    def submit(self, count: int, rate: float | None = None) -> list[Submission]:
        subs = self.load.run(count, rate=rate, start=self.index)
        self.index += count
        return subs


def run(args: argparse.Namespace) -> tuple[list[Phase], Provisioned, str]:
    layout = Layout(relays=args.relays, workers=args.workers, worker_threads=args.worker_threads)
    with provisioned(DESIGNS[args.design], layout, env={**E2E_ENV, **args.settings}, label="e2e",
                     keep_logs=args.keep_logs, admin_url=args.postgres_url) as topo:
        accounts = open_accounts(topo, args.accounts, FUNDING)
        keys = api_keys(topo, accounts) if topo.design.relays else {}
        topo.start_all(("bank", "web"))
        load = LoadGenerator(topo.web_url, accounts, seed=args.seed, threads=args.threads,
                             run_id=f"e2e-{uuid.uuid4().hex[:8]}", api_keys=keys)
        state = Run(args, topo, cpu_meter(topo), load)
        web_only, backlog = phase_web_only(state)
        phases = [web_only, phase_drain(state, backlog), phase_steady(state)]
        flat, profile = phase_flat_out(state)
        phases.append(flat)
        topo.commands.append(f"load generator: {args.threads} threads, requests.Session each, one POST per exchange")
    return phases, topo, profile


def phase_web_only(state: Run) -> tuple[Phase, list[str]]:
    """1. POSTs flat out with only gunicorn (and the bank) running; the exchanges it leaves behind."""
    log(f"web only: {state.args.web_only} POSTs flat out")
    warm = accepted_ids(state.submit(20))  # warm the gunicorn workers' pools and caches
    window, began = Window(state.topo, state.meter), time.monotonic()
    subs = state.submit(state.args.web_only)
    wall = time.monotonic() - began
    backlog = warm + accepted_ids(subs)
    return window.close(Phase("POST /api/exchanges, web only", len(subs), wall, Counter(), len(subs) / wall,
                              latencies_ms=[(s.accepted_at - s.sent_at) * 1000  # type: ignore[operator]
                                            for s in subs if s.accepted_at])), backlog


def phase_drain(state: Run, backlog: list[str]) -> Phase:
    """2. Relays, workers and reconciler start and work off the backlog."""
    log(f"drain: relays, workers and reconciler work off {len(backlog)} exchanges")
    state.topo.start_all()
    window, began = Window(state.topo, state.meter), time.monotonic()
    done = wait_finished(state.topo, backlog, timeout=max(120.0, len(backlog) / 5))
    wall = time.monotonic() - began
    return window.close(Phase("drain the backlog (no HTTP load)", len(backlog), wall, Counter(), len(done) / wall,
                              note="from the moment every process was ready"))


def phase_steady(state: Run) -> Phase:
    """3. A steady rate of POSTs: HTTP accept to completed."""
    args = state.args
    count = int(args.rate * args.latency_seconds)
    log(f"latency: {count} exchanges at {args.rate:g}/s")
    window, began = Window(state.topo, state.meter), time.monotonic()
    subs = state.submit(count, rate=args.rate)
    done = wait_finished(state.topo, accepted_ids(subs), timeout=120)
    wall = time.monotonic() - began
    return window.close(Phase(f"steady {args.rate:g}/s", count, wall, Counter(), count / wall,
                              latencies_ms=latencies(subs, done), server_latencies_ms=server_latencies(done)))


def phase_flat_out(state: Run) -> tuple[Phase, str]:
    """4. POSTs as fast as the API accepts them while the workers run; the profile, if asked for."""
    args, topo = state.args, state.topo
    log(f"flat out: {args.exchanges} exchanges" + (" (profiled with py-spy)" if args.profile else ""))
    profiler = Profiler(topo, Path(args.profile)) if args.profile else None
    if profiler is not None:
        profiler.start()
    window, began_wall, began = Window(topo, state.meter), time.time(), time.monotonic()
    subs = state.submit(args.exchanges)
    post_seconds = time.monotonic() - began
    done = wait_finished(topo, accepted_ids(subs), timeout=max(180.0, args.exchanges / 5))
    flat = window.close(Phase("flat out, end to end", len(subs), 0.0, Counter(), 0.0,
                              latencies_ms=latencies(subs, done), server_latencies_ms=server_latencies(done),
                              note=f"POSTs accepted at {len(subs) / post_seconds:.0f}/s meanwhile"))
    profile = ""
    if profiler is not None:
        profiler.stop()
        profile = profiler.summary(len(subs))
    flat.wall_seconds = max(c.timestamp() for _, c in done.values()) - began_wall
    flat.rate = len(done) / flat.wall_seconds
    return flat, profile
