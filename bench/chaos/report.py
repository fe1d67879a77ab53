"""The chaos run's report: one column per design, every invariant a row, then the details and commands."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections import Counter
from collections.abc import Sequence

from bench.chaos.faults import FaultPlan
from bench.chaos.outcome import Outcome
from harness.designs import BENCH_ENV

#: Violations printed in full; the rest are counted.
SHOWN_VIOLATIONS = 8


def rows_for(o: Outcome, fault_kinds: Sequence[str], failure_kinds: Sequence[str],
             recovery_kinds: Sequence[str]) -> list[tuple[str, str]]:
    sums = ", ".join(f"{c} {t.normalize():f}" for c, t in sorted(o.ledger_sums.items())) or "-"
    quiescence = (f"{o.quiescence_seconds:.1f} s" if o.quiesced
                  else f"NOT reached (gave up after {o.quiescence_seconds:.0f} s)")
    return [
        ("exchanges accepted by the API (202)", str(o.accepted)),
        ("exchanges recorded in the database", str(o.recorded)),
        ("LOST (accepted, missing in the DB)", str(len(o.lost))),
        ("recorded but never acknowledged", str(o.unexpected)),
        ("refused (4xx) / never answered", f"{o.rejected} / {o.unanswered}"),
        ("POSTs retried with the same key", str(o.retried_posts)),
        ("DOUBLE debits in our ledger", str(o.doubled["debit"])),
        ("DOUBLE credits in our ledger", str(o.doubled["credit"])),
        ("DOUBLE refunds in our ledger", str(o.doubled["refund"])),
        ("DOUBLE payments at the bank", f"{o.bank_doubles} ({o.bank_extra_transfers} extra transfers)"),
        ("completed without a debit / credit", f"{o.completed_without['debit']} / {o.completed_without['credit']}"),
        ("ledger sum per currency", sums),
        ("negative balances", str(o.negative_balances)),
        ("NON-TERMINAL exchanges (stuck)", str(o.non_terminal)),
        ("unpublished outbox rows", str(o.unpublished)),
        ("states", ", ".join(f"{s} {n}" for s, n in sorted(o.states.items()))),
        ("invariant violations (services.invariants)", str(len(o.violations))),
        ("time to quiescence after the faults", quiescence),
        ("load / fault window", f"{o.load_seconds:.1f} s / {o.fault_seconds:.1f} s"),
        *[(f"fault: {k}", str(o.faults[k])) for k in fault_kinds],
        *[(f"bank failures seen: {k}", str(o.bank_failures_seen[k])) for k in failure_kinds],
        *[(k, str(o.recoveries[k]) if o.recoveries else "-") for k in recovery_kinds],
        ("VERDICT", "all invariants hold" if o.ok else "INVARIANTS VIOLATED"),
    ]


def print_report(outcomes: Sequence[Outcome], args: argparse.Namespace, plan: FaultPlan) -> None:
    out = sys.stdout.write
    out("\nChaos run: the real topology under fire\n")
    out(f"  machine: {os.cpu_count()} cores, {platform.platform()}, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    rate = args.rate or args.exchanges / plan.min_fault_seconds
    out(f"  load: {args.exchanges} exchanges POSTed at {rate:.1f}/s (or as fast as accepted), {args.accounts} "
        f"accounts, {args.threads} client threads, seed {args.seed}\n")
    out(f"  topology: gunicorn -w 2 --threads 4, {args.relays} relays (outbox only), {args.workers} dramatiq "
        f"processes x {args.worker_threads} threads, reconciler (outbox only), bank\n")
    out(f"  faults (for at least {plan.min_fault_seconds:g} s and while the load runs): kill -9 of a random relay "
        f"or worker every {plan.kill_every_seconds:g} s, restarted after {plan.restart_delay_seconds:g} s; bank "
        f"timeout after applying {plan.timeout_after_apply_rate:.0%} (answer held {plan.stall_ms} ms) and 5xx "
        f"{plan.error_rate:.0%}; pg_terminate_backend of all the topology's connections x{plan.pg_terminations}; ")
    out("kill -9 of redis-server once\n" if plan.redis_restart_at_seconds is not None else "no Redis restart\n")
    out("  Redis runs with --appendonly yes --appendfsync everysec: a kill -9 loses at most the last second of\n"
        "  writes; for our design the reconciler re-sends what such a restart loses (stuck after "
        f"{BENCH_ENV['STUCK_AFTER_SECONDS']} s).\n")
    out(f"  settings: {' '.join(f'{k}={v}' for k, v in BENCH_ENV.items())}\n\n")
    col = 30
    fault_kinds = sorted({k for o in outcomes for k in o.faults})
    failure_kinds = sorted({k for o in outcomes for k in o.bank_failures_seen})
    recovery_kinds = sorted({k for o in outcomes for k in o.recoveries})
    table = [rows_for(o, fault_kinds, failure_kinds, recovery_kinds) for o in outcomes]
    width = max(len(label) for label, _ in table[0]) + 2
    out(f"  {'':<{width}}" + "".join(f"{o.design:>{col}}" for o in outcomes) + "\n")
    for i, (label, _) in enumerate(table[0]):
        cells = [t[i][1] for t in table]
        if max(len(c) for c in cells) > col - 2:
            out(f"  {label}:\n" + "".join(f"      {o.design}: {c}\n" for o, c in zip(outcomes, cells, strict=True)))
        else:
            out(f"  {label:<{width}}" + "".join(f"{c:>{col}}" for c in cells) + "\n")
    for o in outcomes:
        if o.violations or o.lost or o.notes:
            out(f"\n  [{o.design}] details:\n")
            for exchange_id in o.lost[:SHOWN_VIOLATIONS]:
                out(f"    lost: {exchange_id}\n")
            for v in o.violations[:SHOWN_VIOLATIONS]:
                out(f"    {v}\n")
            if len(o.violations) > SHOWN_VIOLATIONS:
                kinds = Counter(_kind(v) for v in o.violations)
                out(f"    ... {len(o.violations)} violations in all: {dict(kinds)}\n")
            for note in o.notes:
                out(f"    note: {note}\n")
    for o in outcomes:
        out(f"\n  [{o.design}] commands the harness ran (environment: DATABASE_URL, BROKER_URL, BANK_URL, "
            "QUEUE_NAME, PGAPPNAME and the settings above):\n")
        for command in o.commands:
            out(f"    {command}\n")
    out("\n")
    sys.stdout.flush()


def _kind(violation: str) -> str:
    for marker in ("posted more than once", "has postings", "is not terminal", "credits in our ledger",
                   "credited exchange", "ledger sums", "negative balance", "unpublished", "refunded but"):
        if marker in violation:
            return marker
    return "other"


