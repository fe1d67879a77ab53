"""One chaos run of one design: set up, load under faults, wait for quiescence, measure."""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from bench.chaos.faults import FaultInjector, FaultPlan
from bench.chaos.outcome import Outcome, bank_failures_seen, bank_of, measure, recoveries, wait_quiescent
from bench.load import FUNDING, LoadGenerator
from harness.designs import BENCH_ENV, DESIGNS, OUTBOX, Layout
from harness.errors import HarnessError
from harness.provision import api_keys, open_accounts, provisioned


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_design(name: str, args: argparse.Namespace, plan: FaultPlan) -> Outcome:
    design = DESIGNS[name]
    outcome = Outcome(name)
    layout = Layout(relays=args.relays, workers=args.workers, worker_threads=args.worker_threads)
    log(f"[{name}] setting up: database, private redis-server, migrations")
    with provisioned(design, layout, env=BENCH_ENV, bank_seed=args.seed, keep_logs=args.keep_logs, label="chaos",
                     admin_url=args.postgres_url) as topo:
        accounts = open_accounts(topo, args.accounts, FUNDING)
        keys = api_keys(topo, accounts) if design is OUTBOX else {}
        log(f"[{name}] starting the topology")
        topo.start_all()
        bank = bank_of(topo)
        bank.set_faults(**plan.bank_faults())
        load = LoadGenerator(topo.web_url, accounts, seed=args.seed, threads=args.threads,
                             run_id=f"chaos-{uuid.uuid4().hex[:8]}", api_keys=keys)
        injector = FaultInjector(topo, plan, args.seed)
        log(f"[{name}] driving {args.exchanges} exchanges under faults")
        began = time.monotonic()
        injector.start()
        rate = args.rate or args.exchanges / plan.min_fault_seconds
        subs = load.run(args.exchanges, rate=rate)
        outcome.load_seconds = time.monotonic() - began
        remaining = plan.min_fault_seconds - outcome.load_seconds
        if remaining > 0:
            time.sleep(remaining)
        injector.stop()
        bank.reset_faults()
        outcome.fault_seconds = time.monotonic() - began
        outcome.faults = injector.counts
        outcome.notes += injector.notes
        if injector.error is not None:
            raise HarnessError(f"the fault injector failed: {injector.error!r}")
        outcome.retried_posts = load.retried_posts
        expected = len({s.exchange_id for s in subs if s.accepted})
        log(f"[{name}] faults stopped after {outcome.fault_seconds:.0f}s; waiting for quiescence")
        deadline = args.deadline or max(180.0, args.exchanges / 10)
        outcome.quiesced, outcome.quiescence_seconds, _ = wait_quiescent(
            topo, expected=expected, deadline_seconds=deadline, stall_seconds=args.stall_seconds, notes=outcome.notes)
        measure(topo, subs, outcome)
        outcome.bank_failures_seen = bank_failures_seen(topo)
        if design.relays:
            outcome.recoveries = recoveries(topo)
        outcome.commands = list(topo.commands)
        topo.failed = name == "outbox" and not outcome.ok
        if topo.failed or args.keep_logs:
            outcome.notes.append(f"logs kept in {topo.log_dir}")
    return outcome
