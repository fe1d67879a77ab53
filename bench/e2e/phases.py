"""The end-to-end benchmark's measurement windows: CPU by role, transactions, Redis commands, completions."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import Uuid, any_, bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from bench.load import Submission
from harness.cpu import CpuMeter
from harness.errors import HarnessError
from harness.outcome import unpublished_total
from harness.provision import Provisioned
from models import exchanges, ledger_entries, outbox_messages
from models.base import utcnow

#: Roles whose CPU is the system's (the bank stands for another company; the harness is the client).
SYSTEM_ROLES = ("web", "relay", "worker", "reconciler", "redis", "postgres")


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
    #: Outbox rows the relay published in the window, and in how many batches (rows share published_at).
    relayed_rows: int = 0
    relay_batches: int = 0
    #: Outbox rows marked done by the worker that ran their step at once (a hand-off), never relayed.
    handed_off_rows: int = 0

    def cpu_ms(self, roles: Sequence[str] = SYSTEM_ROLES) -> float:
        return sum(v for k, v in self.cpu.items() if k.split(" ")[0] in roles) * 1000 / max(1, self.count)


def by_role(cpu: Counter[str]) -> Counter[str]:
    """CPU seconds by role, the PostgreSQL backends of every client under one `postgres`."""
    grouped: Counter[str] = Counter()
    for role, seconds in cpu.items():
        grouped[role.split(" ")[0]] += seconds
    return grouped


class Window:
    """CPU by role, PostgreSQL transactions and Redis commands from its creation to `close()`."""

    def __init__(self, topo: Provisioned, meter: CpuMeter) -> None:
        self.topo, self.meter = topo, meter
        self.cpu, self.activity, self.began = meter.sample(), activity(topo), utcnow()

    def close(self, phase: Phase) -> Phase:
        phase.cpu = CpuMeter.spent(self.cpu, self.meter.sample())
        transactions, commands = activity(self.topo)
        phase.transactions, phase.redis_commands = transactions - self.activity[0], commands - self.activity[1]
        o = outbox_messages
        with self.topo.engine.connect() as conn:
            # The relay publishes a row once it is due; a worker takes a handed-off row before it is.
            phase.relayed_rows, phase.relay_batches = conn.execute(
                select(func.count(), func.count(func.distinct(o.c.published_at)))
                .where(o.c.published_at >= self.began, o.c.published_at >= o.c.available_at)).one()
            phase.handed_off_rows = conn.execute(
                select(func.count()).where(o.c.published_at >= self.began, o.c.published_at < o.c.available_at)
            ).scalar_one()
        return phase


def activity(topo: Provisioned) -> tuple[int, int]:
    """(transactions of our database so far, commands the private Redis has processed so far)."""
    client = redis.Redis(port=topo.redis_server.port, socket_timeout=5)
    try:
        commands = int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()
    return topo.database.transactions(), commands


def _wanted(ids: Sequence[str]) -> object:
    return bindparam("ids", value=[uuid.UUID(i) for i in ids], type_=ARRAY(Uuid))


def completions(topo: Provisioned, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
    """Completed exchanges among `ids`, with (created_at, completed at) as the database has them."""
    with topo.engine.connect() as conn:
        rows = conn.execute(select(exchanges.c.id, exchanges.c.created_at, exchanges.c.updated_at)
                            .where(exchanges.c.id == any_(_wanted(ids)), exchanges.c.state == "completed")).all()
    return {str(r.id): (r.created_at, r.updated_at) for r in rows}


def wait_finished(topo: Provisioned, ids: Sequence[str], timeout: float) -> dict[str, tuple[datetime, datetime]]:
    """Until every exchange of `ids` has done all its work: ours completed with its receipt sent
    and the outbox empty; the naive design's completed (credit job) with its debit posted (debit job)."""
    deadline = time.monotonic() + timeout
    if topo.design.relays:
        all_done = exchanges.c.receipt_sent_at.is_not(None)
    else:
        all_done = exists().where(ledger_entries.c.exchange_id == exchanges.c.id, ledger_entries.c.kind == "debit")
    while True:
        with topo.engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.id == any_(_wanted(ids)), exchanges.c.state == "completed", all_done)).scalar_one()
        if done == len(ids) and unpublished_total(topo.engine) == 0:
            return completions(topo, ids)
        if time.monotonic() > deadline:
            raise HarnessError(f"only {done} of {len(ids)} exchanges finished in {timeout:.0f}s")
        time.sleep(0.2)


def accepted_ids(subs: Sequence[Submission]) -> list[str]:
    missing = [s for s in subs if not s.accepted]
    if missing:
        raise HarnessError(f"{len(missing)} POSTs were not accepted; the first: {missing[0].status} {missing[0].error}")
    return [s.exchange_id for s in subs if s.exchange_id]


def latencies(subs: Sequence[Submission], done: dict[str, tuple[datetime, datetime]]) -> list[float]:
    """HTTP 202 -> completed, per exchange, in ms."""
    return [(done[s.exchange_id][1].timestamp() - s.accepted_at) * 1000 for s in subs
            if s.exchange_id in done and s.accepted_at]


def server_latencies(done: dict[str, tuple[datetime, datetime]]) -> list[float]:
    """Accept transaction -> complete step, by the database's clocks, in ms."""
    return [(completed - created).total_seconds() * 1000 for created, completed in done.values()]
