"""The end-to-end benchmark's report: each phase's rate, latencies, CPU per exchange, and the commands run."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence

from bench.e2e.phases import SYSTEM_ROLES, Phase, by_role
from bench.e2e.run import E2E_ENV
from harness.provision import Provisioned
from harness.stats import percentile

#: The peers' CPU per exchange on this machine (shared/README.md), in ms.
PEERS_CPU_MS = {"naive design": 8.5, "outbox prototype": 11.0, "Procrastinate": 20.0, "DBOS": 47.0}


def print_report(phases: Sequence[Phase], topo: Provisioned, args: argparse.Namespace, profile: str = "") -> None:
    out = sys.stdout.write
    out(f"\nEnd-to-end benchmark ({topo.design.name} design): the full topology, separate processes, "
        "fault-free bank\n")
    out(f"  machine: {os.cpu_count()} cores (os.cpu_count()), {platform.platform()}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs on the machine share the cores)\n")
    extras = f"{args.relays} relays, " if topo.design.relays else ""
    out(f"  topology: gunicorn -w 2 --threads 4 {topo.design.web_app}, {extras}{args.workers} dramatiq processes x "
        f"{args.worker_threads} threads ({topo.design.worker_module})"
        + (", reconciler" if topo.design.relays else "")
        + f", bank; {args.accounts} accounts, {args.threads} client threads\n")
    out(f"  settings: {' '.join(f'{k}={v}' for k, v in {**E2E_ENV, **args.settings}.items())}\n")
    out(f"  PostgreSQL {topo.database.server_version()}, redis-server private "
        "(--appendonly yes --appendfsync everysec)\n\n")
    for p in phases:
        _print_phase(out, p)
        out("\n")
    flat = phases[-1]
    peers = ", ".join(f"{k} {v:g}" for k, v in PEERS_CPU_MS.items())
    out(f"  CPU per exchange, flat out: {flat.cpu_ms():.2f} ms (peers on this machine, shared/README.md: {peers})\n")
    if profile:
        out(profile + "\n")
    out("  commands the harness ran:\n")
    for command in topo.commands:
        out(f"    {command}\n")
    out("\n")
    sys.stdout.flush()


def _print_phase(out: Callable[[str], object], p: Phase) -> None:
    out(f"  {p.label}: {p.count} exchanges in {p.wall_seconds:.1f} s = {p.rate:.1f}/s"
        + (f"  ({p.note})" if p.note else "") + "\n")
    if p.latencies_ms:
        name = "POST answer time" if "web only" in p.label else "HTTP 202 -> completed"
        out(f"      {name}: p50 {percentile(p.latencies_ms, .5):.0f} ms, p90 {percentile(p.latencies_ms, .9):.0f}"
            f" ms, p99 {percentile(p.latencies_ms, .99):.0f} ms, max {max(p.latencies_ms):.0f} ms\n")
    if p.server_latencies_ms:
        s = p.server_latencies_ms
        out(f"      accept transaction -> complete step (database clocks): p50 {percentile(s, .5):.0f} ms, "
            f"p99 {percentile(s, .99):.0f} ms\n")
    roles = by_role(p.cpu)
    breakdown = ", ".join(f"{r} {roles[r] * 1000 / max(1, p.count):.2f}" for r in
                          (*SYSTEM_ROLES, "bank", "harness") if roles.get(r))
    out(f"      CPU ms per exchange: {p.cpu_ms():.2f} (system: web+relay+worker+reconciler+redis+postgres); "
        f"by process: {breakdown}\n")
    out(f"      per exchange: {p.transactions / max(1, p.count):.1f} PostgreSQL transactions of our database "
        f"(harness polling included), {p.redis_commands / max(1, p.count):.1f} Redis commands\n")
    if p.relay_batches or p.handed_off_rows:
        batches = f" ({p.relayed_rows / p.relay_batches:.1f} rows per batch)" if p.relay_batches else ""
        out(f"      relay: {p.relayed_rows} outbox rows published in {p.relay_batches} batches{batches}; "
            f"{p.handed_off_rows} taken, never relayed (sent by the web itself, or handed off by the debit to "
            "its worker)\n")
    pg = {k: v for k, v in p.cpu.items() if k.startswith("postgres")}
    if pg:
        out("      postgres backends by client: " + ", ".join(
            f"{k.removeprefix('postgres ').strip('()')} {v * 1000 / max(1, p.count):.2f}"
            for k, v in sorted(pg.items(), key=lambda kv: -kv[1])) + "\n")
