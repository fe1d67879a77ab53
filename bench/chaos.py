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
import os
import platform
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from bench.topology import (
    DESIGNS,
    FAST_ENV,
    FUNDING,
    OUTBOX,
    POSTGRES_ADMIN_URL,
    QUEUE,
    HarnessError,
    Layout,
    LoadGenerator,
    Service,
    Submission,
    Topology,
    quiet_stop,
)
from domain.states import TERMINAL_STATES
from models import balances, exchange_events, exchanges, ledger_entries, outbox_messages
from services.invariants import check

TERMINAL = {s.value for s in TERMINAL_STATES}
#: Violations printed in full; the rest are counted.
SHOWN_VIOLATIONS = 8


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    kill_every_seconds: float = 3.0
    restart_delay_seconds: float = 0.5
    #: Faults last this long at least, and for as long as the load runs.
    min_fault_seconds: float = 30.0
    redis_restart_at_seconds: float | None = 7.0
    redis_down_seconds: float = 1.0
    pg_terminations: int = 3
    pg_first_at_seconds: float = 4.0
    pg_every_seconds: float = 5.0
    timeout_after_apply_rate: float = 0.2
    error_rate: float = 0.05
    stall_ms: int = 1_500

    def bank_faults(self) -> dict[str, Any]:
        return {"timeout_after_apply_rate": self.timeout_after_apply_rate, "error_rate": self.error_rate,
                "stall_ms": self.stall_ms}


class FaultInjector(threading.Thread):
    """Runs the plan until `stop()`: kills and restarts, the Redis restart, the dropped connections."""

    def __init__(self, topology: Topology, plan: FaultPlan, seed: int) -> None:
        super().__init__(name="faults", daemon=True)
        self.topology = topology
        self.plan = plan
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._pending: list[tuple[float, Service]] = []

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        for _, service in self._pending:
            service.start()
        self._pending.clear()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # surfaced in the report
            self.error = error

    def _run(self) -> None:
        plan, began = self.plan, time.monotonic()
        next_kill = plan.kill_every_seconds
        pg_times = [plan.pg_first_at_seconds + k * plan.pg_every_seconds for k in range(plan.pg_terminations)]
        redis_at = plan.redis_restart_at_seconds
        victims = self.topology.by_role("relay", "worker")
        while not self._stopping.wait(0.05):
            now = time.monotonic() - began
            for due, service in [p for p in self._pending if p[0] <= now]:
                self._pending.remove((due, service))
                service.start()
            self.notes += self.topology.supervise()
            if victims and now >= next_kill:
                next_kill += plan.kill_every_seconds
                victim = self.rng.choice([v for v in victims if v.is_running()] or victims)
                if victim.is_running():
                    victim.kill()
                    self.counts[f"kill -9 {victim.role}"] += 1
                    self._pending.append((now + plan.restart_delay_seconds, victim))
            if pg_times and now >= pg_times[0]:
                pg_times.pop(0)
                self.counts["pg_terminate_backend rounds"] += 1
                self.counts["PostgreSQL backends terminated"] += self.topology.terminate_backends()
            if redis_at is not None and now >= redis_at:
                redis_at = None
                self.topology.redis.kill()
                time.sleep(plan.redis_down_seconds)
                self.topology.redis.start()
                self.counts["kill -9 redis-server, restart"] += 1


# --- waiting for quiescence -----------------------------------------------------------------


@dataclass
class Progress:
    states: Counter[str]
    unpublished: int
    postings: int

    @property
    def open(self) -> int:
        return sum(n for state, n in self.states.items() if state not in TERMINAL)


def progress(topology: Topology) -> Progress:
    assert topology.engine is not None
    with topology.engine.connect() as conn:
        states = Counter(dict(conn.execute(select(exchanges.c.state, func.count()).group_by(exchanges.c.state)).all()))
        unpublished = conn.execute(select(func.count()).select_from(outbox_messages)
                                   .where(outbox_messages.c.published_at.is_(None))).scalar_one()
        postings = conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()
    return Progress(states, unpublished, postings)


def wait_quiescent(topology: Topology, *, expected: int, deadline_seconds: float, stall_seconds: float,
                   notes: list[str]) -> tuple[bool, float, Progress]:
    """Until every exchange is terminal and the outbox is drained (True), or, for a design that
    never gets there, nothing has moved for `stall_seconds` with the broker's queues empty, or
    the deadline passes (False)."""
    began = time.monotonic()
    last, last_change = None, began
    while True:
        notes += topology.supervise()
        now = progress(topology)
        if now.open == 0 and now.unpublished == 0 and sum(now.states.values()) >= expected:
            return True, time.monotonic() - began, now
        snapshot = (tuple(sorted(now.states.items())), now.unpublished, now.postings)
        if snapshot != last:
            last, last_change = snapshot, time.monotonic()
        idle = time.monotonic() - last_change
        if not topology.design.relays and idle >= stall_seconds and topology.redis.queued(QUEUE) == 0:
            return False, time.monotonic() - began, now
        if time.monotonic() - began >= deadline_seconds:
            return False, time.monotonic() - began, now
        time.sleep(0.5)


# --- the outcome ----------------------------------------------------------------------------


@dataclass
class Outcome:
    design: str
    accepted: int = 0
    rejected: int = 0
    unanswered: int = 0
    retried_posts: int = 0
    recorded: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: int = 0
    doubled: Counter[str] = field(default_factory=Counter)
    completed_without: Counter[str] = field(default_factory=Counter)
    bank_doubles: int = 0
    bank_extra_transfers: int = 0
    ledger_sums: dict[str, Decimal] = field(default_factory=dict)
    negative_balances: int = 0
    states: dict[str, int] = field(default_factory=dict)
    non_terminal: int = 0
    unpublished: int = 0
    violations: list[str] = field(default_factory=list)
    quiesced: bool = False
    quiescence_seconds: float = 0.0
    load_seconds: float = 0.0
    fault_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    bank_failures_seen: Counter[str] = field(default_factory=Counter)
    #: How our design coped, from the exchanges' timelines (empty for the naive design).
    recoveries: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.quiesced and not self.lost and not self.violations and not self.doubled
                and not self.bank_doubles and not self.negative_balances and not self.non_terminal
                and not self.unpublished and all(v == 0 for v in self.ledger_sums.values()))


def measure(topology: Topology, subs: Sequence[Submission], outcome: Outcome) -> None:
    assert topology.engine is not None
    accepted = {s.exchange_id for s in subs if s.accepted}
    outcome.accepted = len(accepted)
    outcome.rejected = sum(1 for s in subs if s.status is not None and 400 <= s.status < 500)
    outcome.unanswered = sum(1 for s in subs if s.status is None or s.status >= 500)
    le = ledger_entries
    with topology.engine.connect() as conn:
        rows = conn.execute(select(exchanges.c.id, exchanges.c.state)).all()
        per_kind = conn.execute(select(le.c.exchange_id, le.c.kind, func.count(func.distinct(le.c.posting_id)))
                                .where(le.c.exchange_id.is_not(None)).group_by(le.c.exchange_id, le.c.kind)).all()
        outcome.ledger_sums = {c: Decimal(t) for c, t in conn.execute(
            select(le.c.currency, func.sum(le.c.amount)).group_by(le.c.currency))}
        outcome.negative_balances = conn.execute(select(func.count()).select_from(balances).where(
            (balances.c.available < 0) | (balances.c.held < 0))).scalar_one()
        outcome.unpublished = conn.execute(select(func.count()).select_from(outbox_messages)
                                           .where(outbox_messages.c.published_at.is_(None))).scalar_one()
    recorded = {str(r.id): r.state for r in rows}
    outcome.recorded = len(recorded)
    outcome.lost = sorted(accepted - set(recorded))
    outcome.unexpected = len(set(recorded) - accepted)
    outcome.states = dict(Counter(recorded.values()))
    outcome.non_terminal = sum(1 for s in recorded.values() if s not in TERMINAL)
    kinds: dict[str, Counter[str]] = {}
    for exchange_id, kind, n in per_kind:
        kinds.setdefault(str(exchange_id), Counter())[kind] = n
        if n > 1:
            outcome.doubled[kind] += 1
    for exchange_id, state in recorded.items():
        if state == "completed":
            for kind in ("debit", "credit"):
                if kinds.get(exchange_id, Counter())[kind] == 0:
                    outcome.completed_without[kind] += 1
    paid = Counter(t.reference for t in topology.bank().all_applied())
    outcome.bank_doubles = sum(1 for n in paid.values() if n > 1)
    outcome.bank_extra_transfers = sum(n - 1 for n in paid.values() if n > 1)
    report = check(topology.engine, bank=topology.bank(), settled=True)
    outcome.violations = report.violations


#: Timeline outcomes that show a recovery, and how the report names them.
RECOVERIES = {
    ("reconciler", "requeued"): "re-sent by the reconciler (stuck > STUCK_AFTER_SECONDS)",
    ("credit", "rescued"): "credit claims taken over after a lease expired",
    (None, "lost_claim"): "late writes refused by the fencing token",
    (None, "parked"): "parked in needs_attention (then resolved)",
}


def recoveries(topology: Topology) -> Counter[str]:
    ev = exchange_events
    assert topology.engine is not None
    seen: Counter[str] = Counter(dict.fromkeys(RECOVERIES.values(), 0))
    with topology.engine.connect() as conn:
        for step, outcome, n in conn.execute(select(ev.c.step, ev.c.outcome, func.count())
                                             .group_by(ev.c.step, ev.c.outcome)):
            for (want_step, want_outcome), label in RECOVERIES.items():
                if outcome == want_outcome and want_step in (None, step):
                    seen[label] += n
        seen["bank answers replayed for a repeated key"] = conn.execute(
            select(func.count()).select_from(ev).where(ev.c.step == "credit", ev.c.outcome == "succeeded",
                                                       ev.c.detail["replayed"].as_boolean())).scalar_one()
    return seen


def bank_failures_seen(topology: Topology) -> Counter[str]:
    """Bank calls that failed as the steps saw them: timeouts (maybe applied) and 5xx (not applied)."""
    text = "".join(s.output() for s in topology.by_role("worker"))
    seen: Counter[str] = Counter()
    if topology.design.relays:
        assert topology.engine is not None
        ev = exchange_events
        with topology.engine.connect() as conn:
            for (error,) in conn.execute(select(ev.c.error).where(ev.c.step == "credit",
                                                                  ev.c.outcome == "retrying")):
                seen["timeout (maybe applied)" if "did not answer" in (error or "") else "5xx / unreachable"] += 1
        return seen
    seen["timeout (maybe applied)"] = text.count("BankOutcomeUnknown: bank did not answer")
    seen["5xx / unreachable"] = text.count("BankUnavailable: bank answered 5")
    return seen


# --- one run ----------------------------------------------------------------------------------


def run_design(name: str, args: argparse.Namespace, plan: FaultPlan) -> Outcome:
    design = DESIGNS[name]
    outcome = Outcome(name)
    layout = Layout(relays=args.relays, workers=args.workers, worker_threads=args.worker_threads)
    log(f"[{name}] setting up: database, private redis-server, migrations")
    with Topology(design, layout, env=FAST_ENV, bank_seed=args.seed, keep_logs=args.keep_logs, label="chaos",
                  admin_url=args.postgres_url) as topo, quiet_stop(topo):
        accounts = topo.open_accounts(args.accounts, FUNDING)
        keys = topo.api_keys(accounts) if design is OUTBOX else {}
        log(f"[{name}] starting the topology")
        topo.start_all()
        bank = topo.bank()
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
            outcome.notes.append(f"logs kept in {topo.work_dir}")
    return outcome


# --- the report ------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
        f"{FAST_ENV['STUCK_AFTER_SECONDS']} s).\n")
    out(f"  settings: {' '.join(f'{k}={v}' for k, v in FAST_ENV.items())}\n\n")
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


# --- entry point -----------------------------------------------------------------------------


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


if __name__ == "__main__":
    raise SystemExit(main())
