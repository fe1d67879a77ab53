"""What a chaos run left behind: quiescence, lost and doubled money, recoveries, invariants."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import redis
from sqlalchemy import func, select

from bank.client import BankClient
from bench.load import Submission
from harness.invariants import check
from harness.outcome import TERMINAL, exchange_states, postings_by_exchange, unpublished_total
from harness.provision import Provisioned
from models import balances, exchange_events, exchanges, ledger_entries

#: Seconds a bank call of the harness may take (it reads every transfer at the end).
BANK_READ_TIMEOUT_SECONDS = 30.0


def bank_of(topology: Provisioned) -> BankClient:
    return topology.bank_client(read_timeout=BANK_READ_TIMEOUT_SECONDS)


# --- waiting for quiescence -----------------------------------------------------------------


@dataclass
class Progress:
    states: Counter[str]
    unpublished: int
    postings: int

    @property
    def open(self) -> int:
        return sum(n for state, n in self.states.items() if state not in TERMINAL)


def progress(topology: Provisioned) -> Progress:
    with topology.engine.connect() as conn:
        postings = conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()
    return Progress(exchange_states(topology.engine), unpublished_total(topology.engine), postings)


def queued_or_unknown(topology: Provisioned) -> int:
    """Messages waiting in the broker; -1 while it does not answer."""
    try:
        return topology.queued()
    except redis.RedisError:
        return -1


def wait_quiescent(topology: Provisioned, *, expected: int, deadline_seconds: float, stall_seconds: float,
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
        if not topology.design.relays and idle >= stall_seconds and queued_or_unknown(topology) == 0:
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


def measure(topology: Provisioned, subs: Sequence[Submission], outcome: Outcome) -> None:
    accepted = {s.exchange_id for s in subs if s.accepted}
    outcome.accepted = len(accepted)
    outcome.rejected = sum(1 for s in subs if s.status is not None and 400 <= s.status < 500)
    outcome.unanswered = sum(1 for s in subs if s.status is None or s.status >= 500)
    le = ledger_entries
    with topology.engine.connect() as conn:
        rows = conn.execute(select(exchanges.c.id, exchanges.c.state)).all()
        outcome.ledger_sums = {c: Decimal(t) for c, t in conn.execute(
            select(le.c.currency, func.sum(le.c.amount)).group_by(le.c.currency))}
        outcome.negative_balances = conn.execute(select(func.count()).select_from(balances).where(
            (balances.c.available < 0) | (balances.c.held < 0))).scalar_one()
    outcome.unpublished = unpublished_total(topology.engine)
    recorded = {str(r.id): r.state for r in rows}
    outcome.recorded = len(recorded)
    outcome.lost = sorted(accepted - set(recorded))
    outcome.unexpected = len(set(recorded) - accepted)
    outcome.states = dict(Counter(recorded.values()))
    outcome.non_terminal = sum(1 for s in recorded.values() if s not in TERMINAL)
    kinds = {str(exchange_id): counts for exchange_id, counts in postings_by_exchange(topology.engine).items()}
    for counts in kinds.values():
        for kind, n in counts.items():
            if n > 1:
                outcome.doubled[kind] += 1
    for exchange_id, state in recorded.items():
        if state == "completed":
            for kind in ("debit", "credit"):
                if kinds.get(exchange_id, Counter())[kind] == 0:
                    outcome.completed_without[kind] += 1
    paid = Counter(t.reference for t in bank_of(topology).all_applied())
    outcome.bank_doubles = sum(1 for n in paid.values() if n > 1)
    outcome.bank_extra_transfers = sum(n - 1 for n in paid.values() if n > 1)
    report = check(topology.engine, bank=bank_of(topology), settled=True)
    outcome.violations = report.violations


#: Timeline outcomes that show a recovery, and how the report names them.
RECOVERIES = {
    ("reconciler", "requeued"): "re-sent by the reconciler (stuck > STUCK_AFTER_SECONDS)",
    ("credit", "rescued"): "credit claims taken over after a lease expired",
    (None, "lost_claim"): "late writes refused by the fencing token",
    (None, "parked"): "parked in needs_attention (then resolved)",
}


def recoveries(topology: Provisioned) -> Counter[str]:
    ev = exchange_events
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


def bank_failures_seen(topology: Provisioned) -> Counter[str]:
    """Bank calls that failed as the steps saw them: timeouts (maybe applied) and 5xx (not applied)."""
    seen: Counter[str] = Counter()
    if topology.design.relays:
        ev = exchange_events
        with topology.engine.connect() as conn:
            for (error,) in conn.execute(select(ev.c.error).where(ev.c.step == "credit",
                                                                  ev.c.outcome == "retrying")):
                seen["timeout (maybe applied)" if "did not answer" in (error or "") else "5xx / unreachable"] += 1
        return seen
    text = "".join(p.output() for p in topology.by_role("worker"))
    seen["timeout (maybe applied)"] = text.count("BankOutcomeUnknown: bank did not answer")
    seen["5xx / unreachable"] = text.count("BankUnavailable: bank answered 5")
    return seen
