"""Ours beside the naive design, from two runs of the same phases on the same topology: one table."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from bench.e2e.phases import Phase, by_role
from harness.stats import percentile

Row = tuple[str, Callable[[Sequence[Phase]], float], str, bool]


def _phase(phases: Sequence[Phase], prefix: str) -> Phase:
    return next(p for p in phases if p.label.startswith(prefix))


def _per(p: Phase, value: float) -> float:
    return value / max(1, p.count)


#: (figure, how to read it from a run's phases, format, higher is better).
ROWS: list[Row] = [
    ("flat out, exchanges completed/s", lambda ps: _phase(ps, "flat out").rate, "{:.1f}", True),
    ("CPU ms per exchange, flat out (web, relay, worker, reconciler, PostgreSQL, Redis)",
     lambda ps: _phase(ps, "flat out").cpu_ms(), "{:.2f}", False),
    ("drain of the backlog, exchanges/s", lambda ps: _phase(ps, "drain").rate, "{:.1f}", True),
    ("POST /api/exchanges alone under gunicorn, req/s", lambda ps: _phase(ps, "POST").rate, "{:.1f}", True),
    ("PostgreSQL transactions per POST (harness polling included)",
     lambda ps: _per(_phase(ps, "POST"), _phase(ps, "POST").transactions), "{:.1f}", False),
    ("steady: HTTP 202 -> completed p50, ms",
     lambda ps: percentile(_phase(ps, "steady").latencies_ms, .5), "{:.0f}", False),
    ("steady: HTTP 202 -> completed p99, ms",
     lambda ps: percentile(_phase(ps, "steady").latencies_ms, .99), "{:.0f}", False),
    ("steady: relay CPU ms per exchange",
     lambda ps: _per(_phase(ps, "steady"), by_role(_phase(ps, "steady").cpu)["relay"] * 1000), "{:.2f}", False),
    ("steady: outbox rows relayed per exchange",
     lambda ps: _per(_phase(ps, "steady"), _phase(ps, "steady").relayed_rows), "{:.2f}", False),
    ("steady: Redis commands per exchange",
     lambda ps: _per(_phase(ps, "steady"), _phase(ps, "steady").redis_commands), "{:.1f}", False),
]


def print_comparison(ours: Sequence[Phase], naive: Sequence[Phase]) -> None:
    out = sys.stdout.write
    out(f"\nOurs (outbox) beside the naive design, measured back to back in this run on {os.cpu_count()} cores\n\n")
    out("| figure | ours | naive design | ours / naive |\n|---|---:|---:|---:|\n")
    for name, read, fmt, _higher in ROWS:
        a, b = read(ours), read(naive)
        ratio = f"{a / b:.2f}x" if b else "-"
        out(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |\n")
    flat = _phase(ours, "flat out")
    roles = by_role(flat.cpu)
    out("\nours, flat out, CPU ms per exchange by process: " + ", ".join(
        f"{r} {roles[r] * 1000 / max(1, flat.count):.2f}" for r in sorted(roles, key=lambda r: -roles[r])) + "\n")
    naive_flat = _phase(naive, "flat out")
    naive_roles = by_role(naive_flat.cpu)
    out("naive, flat out, CPU ms per exchange by process: " + ", ".join(
        f"{r} {naive_roles[r] * 1000 / max(1, naive_flat.count):.2f}"
        for r in sorted(naive_roles, key=lambda r: -naive_roles[r])) + "\n")
    sys.stdout.flush()
