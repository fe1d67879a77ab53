"""The cluster run's report: each fault and how soon after its heal every exchange was terminal, then the money."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench.chaos.report import rows_for
from bench.cluster.run import LAYOUT, QUIESCENCE_LIMIT_SECONDS, ClusterOutcome
from harness.cluster import CLUSTER_ENV, HOSTS
from harness.designs import BENCH_ENV

#: Rows of the chaos report that a cluster run has no use for (it times each heal instead).
SKIPPED_ROWS = ("time to quiescence after the faults", "load / fault window")


def print_report(result: ClusterOutcome) -> None:
    out = sys.stdout.write
    out("\nCluster run: hosts in network namespaces, faults between them\n")
    out(f"  machine: {os.cpu_count()} cores, {platform.platform()}\n")
    out(f"  hosts: {', '.join(HOSTS)} (10.77.0.0/24, one bridge)\n")
    out(f"  roles: 2 x gunicorn -w {LAYOUT.web_workers} --threads {LAYOUT.web_threads} (web1 sends first messages "
        f"itself, web2 leaves them to the relays), 2 relays, 2 dramatiq x {LAYOUT.worker_threads} threads, "
        "reconciler, bank; PostgreSQL 15 and PgBouncer (transaction pooling) of the run's own; RabbitMQ 3-node "
        "cluster, quorum queues\n")
    out(f"  settings: {' '.join(f'{k}={v}' for k, v in {**BENCH_ENV, **CLUSTER_ENV}.items())}\n\n")
    out(f"  {'fault':<20}{'posted':>8}{'accepted':>10}  {'terminal after heal':<22}what\n")
    for p in result.phases:
        when = f"{p.seconds_to_quiescence:.1f} s" if p.quiesced else "NOT reached"
        flag = "" if p.ok else "  <-- FAILED"
        out(f"  {p.name:<20}{p.posted:>8}{p.accepted:>10}  {when:<22}{p.title}{flag}\n")
        for note in p.notes + p.violations:
            out(f"  {'':<20}  {note}\n")
    out(f"\n  (every exchange must be terminal within {QUIESCENCE_LIMIT_SECONDS:.0f} s of each heal)\n\n")
    rows = [r for r in rows_for(result.money, [], [], sorted(result.money.recoveries)) if r[0] not in SKIPPED_ROWS]
    rows[-1] = ("VERDICT", "all invariants hold" if result.ok else "INVARIANTS VIOLATED")
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        out(f"  {label:<{width}}{value}\n")
    for v in result.money.violations[:8]:
        out(f"    violation: {v}\n")
    for note in result.money.notes:
        out(f"    note: {note}\n")
    out("\n  commands the harness ran (each role under `ip netns exec fxc<pid>-<host>`):\n")
    for command in result.commands:
        out(f"    {command}\n")
    sys.stdout.flush()


def as_json(result: ClusterOutcome) -> dict[str, Any]:
    money = result.money
    return {
        "ok": result.ok,
        "phases": [{"name": p.name, "posted": p.posted, "accepted": p.accepted, "quiesced": p.quiesced,
                    "seconds_to_quiescence": round(p.seconds_to_quiescence, 1), "notes": p.notes,
                    "violations": p.violations} for p in result.phases],
        "accepted": money.accepted, "recorded": money.recorded, "lost": len(money.lost),
        "doubled": dict(money.doubled), "bank_doubles": money.bank_doubles,
        "ledger_sums": {c: str(t) for c, t in money.ledger_sums.items()},
        "negative_balances": money.negative_balances, "non_terminal": money.non_terminal,
        "unpublished": money.unpublished, "violations": money.violations, "states": money.states,
        "recoveries": dict(money.recoveries),
    }


def write_json(result: ClusterOutcome, path: Path) -> None:
    path.write_text(json.dumps(as_json(result), indent=2))
