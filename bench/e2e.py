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
bench/naive.py the same way; `--set NAME=VALUE` tries another setting (e.g. RELAY_COALESCE_MS).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Uuid, any_, bindparam, exists, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from bench.topology import (
    BIN,
    DESIGNS,
    FAST_ENV,
    FUNDING,
    POSTGRES_ADMIN_URL,
    CpuMeter,
    HarnessError,
    Layout,
    LoadGenerator,
    Submission,
    Topology,
    quiet_stop,
)
from models import exchanges, ledger_entries, outbox_messages
from models.base import utcnow

#: Roles whose Python processes `--profile` samples with py-spy.
PROFILED_ROLES = ("web", "relay", "worker", "reconciler")
#: Frames listed per role in the profile summary.
PROFILE_TOP = 14

#: The reconciler at its production timings: its pass reads every bank transfer, and at the
#: chaos run's 2 s it would be measured more than the exchanges are.
E2E_ENV = {**FAST_ENV, "STUCK_AFTER_SECONDS": "120", "RECONCILE_INTERVAL_SECONDS": "30"}
#: Roles whose CPU is the system's (the bank stands for another company; the harness is the client).
SYSTEM_ROLES = ("web", "relay", "worker", "reconciler", "redis", "postgres")
#: The peers' CPU per exchange on this machine (shared/README.md), in ms.
PEERS_CPU_MS = {"naive design": 8.5, "outbox prototype": 11.0, "Procrastinate": 20.0, "DBOS": 47.0}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass
class Phase:
    label: str
    count: int
    wall_seconds: float
    cpu: Counter[str]
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    server_latencies_ms: list[float] = field(default_factory=list)
    note: str = ""
    #: PostgreSQL transactions (commits + rollbacks) of our database and Redis commands, in the window.
    transactions: int = 0
    redis_commands: int = 0
    #: Outbox rows published in the window, and in how many relay batches (rows share published_at).
    relayed_rows: int = 0
    relay_batches: int = 0

    def cpu_ms(self, roles: Sequence[str] = SYSTEM_ROLES) -> float:
        return sum(v for k, v in self.cpu.items() if k.split(" ")[0] in roles) * 1000 / max(1, self.count)


def _by_role(cpu: Counter[str]) -> Counter[str]:
    grouped: Counter[str] = Counter()
    for role, seconds in cpu.items():
        grouped[role.split(" ")[0]] += seconds
    return grouped


class Window:
    """CPU by role, PostgreSQL transactions and Redis commands from its creation to `close()`."""

    def __init__(self, topo: Topology, meter: CpuMeter) -> None:
        self.topo, self.meter = topo, meter
        self.cpu, self.activity, self.began = meter.sample(), activity(topo), utcnow()

    def close(self, phase: Phase) -> Phase:
        phase.cpu = CpuMeter.spent(self.cpu, self.meter.sample())
        transactions, commands = activity(self.topo)
        phase.transactions, phase.redis_commands = transactions - self.activity[0], commands - self.activity[1]
        assert self.topo.engine is not None
        with self.topo.engine.connect() as conn:
            phase.relayed_rows, phase.relay_batches = conn.execute(
                select(func.count(), func.count(func.distinct(outbox_messages.c.published_at)))
                .where(outbox_messages.c.published_at >= self.began)).one()
        return phase


def activity(topo: Topology) -> tuple[int, int]:
    """(transactions of our database so far, commands the private Redis has processed so far)."""
    with topo.admin.connect() as conn:
        transactions = conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                         "WHERE datname = :db"), {"db": topo.database}).scalar_one()
    client = redis.Redis(port=topo.redis.port, socket_timeout=5)
    try:
        commands = int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()
    return int(transactions), commands


def completions(topo: Topology, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
    """Completed exchanges among `ids`, with (created_at, completed at) as the database has them."""
    assert topo.engine is not None
    wanted = bindparam("ids", value=[uuid.UUID(i) for i in ids], type_=ARRAY(Uuid))
    with topo.engine.connect() as conn:
        rows = conn.execute(select(exchanges.c.id, exchanges.c.created_at, exchanges.c.updated_at)
                            .where(exchanges.c.id == any_(wanted), exchanges.c.state == "completed")).all()
    return {str(r.id): (r.created_at, r.updated_at) for r in rows}


def wait_finished(topo: Topology, ids: Sequence[str], timeout: float) -> dict[str, tuple[datetime, datetime]]:
    """Until every exchange of `ids` has done all its work: ours completed with its receipt sent
    and the outbox empty; the naive design's completed (credit job) with its debit posted (debit job)."""
    assert topo.engine is not None
    wanted = bindparam("ids", value=[uuid.UUID(i) for i in ids], type_=ARRAY(Uuid))
    deadline = time.monotonic() + timeout
    if topo.design.relays:
        all_done = exchanges.c.receipt_sent_at.is_not(None)
    else:
        all_done = exists().where(ledger_entries.c.exchange_id == exchanges.c.id, ledger_entries.c.kind == "debit")
    while True:
        with topo.engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.id == any_(wanted), exchanges.c.state == "completed", all_done)).scalar_one()
            unpublished = conn.execute(select(func.count()).select_from(outbox_messages)
                                       .where(outbox_messages.c.published_at.is_(None))).scalar_one()
        if done == len(ids) and unpublished == 0:
            return completions(topo, ids)
        if time.monotonic() > deadline:
            raise HarnessError(f"only {done} of {len(ids)} exchanges finished in {timeout:.0f}s")
        time.sleep(0.2)


def accepted_ids(subs: Sequence[Submission]) -> list[str]:
    missing = [s for s in subs if not s.accepted]
    if missing:
        raise HarnessError(f"{len(missing)} POSTs were not accepted; the first: {missing[0].status} {missing[0].error}")
    return [s.exchange_id for s in subs if s.exchange_id]


def run(args: argparse.Namespace) -> tuple[list[Phase], Topology, str]:
    layout = Layout(relays=args.relays, workers=args.workers, worker_threads=args.worker_threads)
    phases: list[Phase] = []
    profile = ""
    with Topology(DESIGNS[args.design], layout, env={**E2E_ENV, **args.settings}, label="e2e", keep_logs=args.keep_logs,
                  admin_url=args.postgres_url) as topo, quiet_stop(topo):
        accounts = topo.open_accounts(args.accounts, FUNDING)
        keys = topo.api_keys(accounts) if topo.design.relays else {}
        topo.start_all(("bank", "web"))
        meter = CpuMeter(topo)
        load = LoadGenerator(topo.web_url, accounts, seed=args.seed, threads=args.threads,
                             run_id=f"e2e-{uuid.uuid4().hex[:8]}", api_keys=keys)
        index = 0

        # 1. web only ------------------------------------------------------------------
        log(f"web only: {args.web_only} POSTs flat out")
        warm = accepted_ids(load.run(20, start=index))  # warm the gunicorn workers' pools and caches
        index += 20
        window, began = Window(topo, meter), time.monotonic()
        subs = load.run(args.web_only, start=index)
        wall = time.monotonic() - began
        index += args.web_only
        backlog = warm + accepted_ids(subs)
        phases.append(window.close(Phase("POST /api/exchanges, web only", len(subs), wall, Counter(),
                                         len(subs) / wall, latencies_ms=[(s.accepted_at - s.sent_at) * 1000
                                                                         for s in subs if s.accepted_at])))

        # 2. drain ---------------------------------------------------------------------------
        log(f"drain: relays, workers and reconciler work off {len(backlog)} exchanges")
        topo.start_all()
        window, began = Window(topo, meter), time.monotonic()
        done = wait_finished(topo, backlog, timeout=max(120.0, len(backlog) / 5))
        wall = time.monotonic() - began
        phases.append(window.close(Phase("drain the backlog (no HTTP load)", len(backlog), wall, Counter(),
                                         len(done) / wall, note="from the moment every process was ready")))

        # 3. latency at a steady rate --------------------------------------------------------
        count = int(args.rate * args.latency_seconds)
        log(f"latency: {count} exchanges at {args.rate:g}/s")
        window, began = Window(topo, meter), time.monotonic()
        subs = load.run(count, rate=args.rate, start=index)
        index += count
        done = wait_finished(topo, accepted_ids(subs), timeout=120)
        wall = time.monotonic() - began
        phases.append(window.close(Phase(f"steady {args.rate:g}/s", count, wall, Counter(), count / wall,
                                         latencies_ms=_latencies(subs, done),
                                         server_latencies_ms=_server_latencies(done))))

        # 4. flat out ------------------------------------------------------------------------
        log(f"flat out: {args.exchanges} exchanges" + (" (profiled with py-spy)" if args.profile else ""))
        profiler = Profiler(topo, Path(args.profile)) if args.profile else None
        if profiler is not None:
            profiler.start()
        window, began_wall, began = Window(topo, meter), time.time(), time.monotonic()
        subs = load.run(args.exchanges, start=index)
        post_seconds = time.monotonic() - began
        done = wait_finished(topo, accepted_ids(subs), timeout=max(180.0, args.exchanges / 5))
        flat = window.close(Phase("flat out, end to end", len(subs), 0.0, Counter(), 0.0,
                                  latencies_ms=_latencies(subs, done), server_latencies_ms=_server_latencies(done),
                                  note=f"POSTs accepted at {len(subs) / post_seconds:.0f}/s meanwhile"))
        if profiler is not None:
            profiler.stop()
            profile = profiler.summary(len(subs))
        flat.wall_seconds = max(c.timestamp() for _, c in done.values()) - began_wall
        flat.rate = len(done) / flat.wall_seconds
        phases.append(flat)
        topo.commands.append(f"load generator: {args.threads} threads, requests.Session each, one POST per exchange")
    return phases, topo, profile


def _latencies(subs: Sequence[Submission], done: dict[str, tuple[datetime, datetime]]) -> list[float]:
    return [(done[s.exchange_id][1].timestamp() - s.accepted_at) * 1000 for s in subs
            if s.exchange_id in done and s.accepted_at]


def _server_latencies(done: dict[str, tuple[datetime, datetime]]) -> list[float]:
    return [(completed - created).total_seconds() * 1000 for created, completed in done.values()]


# --- profiling ------------------------------------------------------------------------------


class Profiler:
    """py-spy on every Python process of the profiled roles, from `start()` to `stop()` (SIGINT)."""

    def __init__(self, topo: Topology, out_dir: Path, rate_hz: int = 100) -> None:
        self.topo = topo
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self.samplers: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        py_spy = BIN / "py-spy"
        if not py_spy.exists():
            raise HarnessError(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid, role in python_processes(self.topo, PROFILED_ROLES).items():
            path = self.out_dir / f"{role}-{pid}.txt"
            command = (str(py_spy), "record", "--pid", str(pid), "--rate", str(self.rate_hz), "--format", "raw",
                       "--output", str(path), "--nonblocking", "--gil")
            self.samplers.append((role, path, subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                               stderr=subprocess.DEVNULL)))
        self.topo.commands.append(f"{BIN / 'py-spy'} record --pid <each Python process> --rate {self.rate_hz} "
                                  "--format raw --nonblocking --gil   (flat-out phase)")

    def stop(self) -> None:
        for _, _, process in self.samplers:
            process.send_signal(signal.SIGINT)
        for _, _, process in self.samplers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self, exchanges_count: int) -> str:
        by_role: dict[str, Counter[str]] = {}
        for role, path, _ in self.samplers:
            stacks = by_role.setdefault(role, Counter())
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    stack, _, count = line.rpartition(" ")
                    if stack and count.isdigit():
                        stacks[stack] += int(count)
        lines = [f"  py-spy profile of the flat-out phase ({self.rate_hz} Hz, only threads holding the GIL, i.e. "
                 f"Python's own CPU; raw stacks in {self.out_dir}):"]
        for role, stacks in by_role.items():
            total = sum(stacks.values())
            if not total:
                continue
            lines.append(f"    {role}: {total} samples = {total * 1000 / self.rate_hz / exchanges_count:.2f} "
                         "ms of GIL-holding Python per exchange")
            lines.append("      self time by package: " + ", ".join(
                f"{pkg} {n * 100 / total:.0f}%" for pkg, n in _self_by(stacks, _package).most_common(10)))
            lines.append("      top self frames: " + "; ".join(
                f"{frame} {n * 100 / total:.0f}%" for frame, n in _self_by(stacks, _short).most_common(PROFILE_TOP)))
            inclusive: Counter[str] = Counter()
            for stack, n in stacks.items():
                for frame in {_short(f) for f in stack.split(";") if _ours(f)}:
                    inclusive[frame] += n
            lines.append("      our code, inclusive: " + "; ".join(
                f"{frame} {n * 100 / total:.0f}%" for frame, n in inclusive.most_common(PROFILE_TOP)))
        return "\n".join(lines)


def python_processes(topo: Topology, roles: Sequence[str]) -> dict[int, str]:
    """pid -> role of every Python process in the trees of the services of `roles`."""
    meter = CpuMeter(topo).sample()
    found = {}
    for pid, (role, _) in meter.items():
        if role in roles:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if "python" in Path(exe).name:
                found[pid] = role
    return found


#: Where our code lives: top-level folders and modules of the project.
_OUR_DIRS = ("services", "outbox", "jobs", "web", "domain", "models", "bank")
_OUR_FILES = ("app.py", "database.py", "observability.py", "settings.py", "errors.py")


def _file(frame: str) -> str:
    """py-spy's frame is `function (path/inside/sys/path.py:line)`."""
    return frame[frame.rfind("(") + 1:].rstrip(")").rsplit(":", 1)[0]


def _ours(frame: str) -> bool:
    path = _file(frame)
    return path.split("/", 1)[0] in _OUR_DIRS or path in _OUR_FILES


def _package(frame: str) -> str:
    path = _file(frame)
    if _ours(frame):
        return "ours: " + path.split("/", 1)[0].removesuffix(".py")
    return path.split("/", 1)[0].removesuffix(".py")


def _short(frame: str) -> str:
    name = frame[:frame.rfind(" (")] if " (" in frame else frame
    return f"{name} ({_file(frame).removesuffix('.py')})"


def _self_by(stacks: Counter[str], key: Any) -> Counter[str]:
    result: Counter[str] = Counter()
    for stack, n in stacks.items():
        result[key(stack.rsplit(";", 1)[-1])] += n
    return result


# --- report ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_report(phases: Sequence[Phase], topo: Topology, args: argparse.Namespace, profile: str = "") -> None:
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
    out(f"  PostgreSQL {_pg_version(topo)}, redis-server private (--appendonly yes --appendfsync everysec)\n\n")
    for p in phases:
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
        roles = _by_role(p.cpu)
        breakdown = ", ".join(f"{r} {roles[r] * 1000 / max(1, p.count):.2f}" for r in
                              (*SYSTEM_ROLES, "bank", "harness") if roles.get(r))
        out(f"      CPU ms per exchange: {p.cpu_ms():.2f} (system: web+relay+worker+reconciler+redis+postgres); "
            f"by process: {breakdown}\n")
        out(f"      per exchange: {p.transactions / max(1, p.count):.1f} PostgreSQL transactions of our database "
            f"(harness polling included), {p.redis_commands / max(1, p.count):.1f} Redis commands\n")
        if p.relay_batches:
            out(f"      relay: {p.relayed_rows} outbox rows published in {p.relay_batches} batches "
                f"({p.relayed_rows / p.relay_batches:.1f} rows per batch)\n")
        pg = {k: v for k, v in p.cpu.items() if k.startswith("postgres")}
        if pg:
            out("      postgres backends by client: " + ", ".join(
                f"{k.removeprefix('postgres ').strip('()')} {v * 1000 / max(1, p.count):.2f}"
                for k, v in sorted(pg.items(), key=lambda kv: -kv[1])) + "\n")
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


def _pg_version(topo: Topology) -> str:
    with topo.admin.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar())


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
    p.add_argument("--design", choices=("outbox", "naive"), default="outbox",
                   help="ours (default), or bench/naive.py measured the same way, for calibration")
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
    phases, topo, profile = run(args)
    print_report(phases, topo, args, profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
