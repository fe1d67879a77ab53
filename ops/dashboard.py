"""What the operations dashboard shows: the queries, read in one connection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_

from domain.states import MOVING_STATES, ExchangeState
from models import accounts, exchanges, reconciliation_findings
from ops import checks
from ops import counts as state_counts
from ops.checks import CheckState
from ops.findings import open_findings
from ops.processes import ProcessView, alive_by_role, holder_alive, processes
from outbox import store
from outbox.store import OutboxStats

S = ExchangeState
PAGE_SIZE = 50


@dataclass(frozen=True)
class ExchangeSummary:
    id: uuid.UUID
    account_id: uuid.UUID
    state: str
    from_currency: str
    to_currency: str
    amount: Decimal
    to_amount: Decimal | None
    step: str | None
    attempt: int
    last_error: str | None
    claimed_by: str | None
    created_at: datetime
    updated_at: datetime
    #: The stuck clock: when a step last produced an outcome.
    progressed_at: datetime
    #: When the broker delivers the current step's next retry, if one is pending.
    next_attempt_at: datetime | None


_SUMMARY = (exchanges.c.id, exchanges.c.account_id, exchanges.c.state, exchanges.c.from_currency,
            exchanges.c.to_currency, exchanges.c.amount, exchanges.c.to_amount, exchanges.c.step, exchanges.c.attempt,
            exchanges.c.last_error, exchanges.c.claimed_by, exchanges.c.created_at, exchanges.c.updated_at,
            exchanges.c.progressed_at, exchanges.c.next_attempt_at)


def _summaries(conn: Connection, query: Any) -> list[ExchangeSummary]:
    return [ExchangeSummary(*row) for row in conn.execute(query)]


def counts_by_state(conn: Connection) -> dict[str, int]:
    return state_counts.by_state(conn)


def _stuck_where(older_than: timedelta, now: datetime) -> Any:
    # No step outcome for `older_than`: re-sends and operator notes do not count as progress.
    return (exchanges.c.state.in_(MOVING_STATES)) & (exchanges.c.progressed_at < now - older_than)


def stuck(conn: Connection, *, older_than: timedelta, now: datetime, limit: int = PAGE_SIZE) -> list[ExchangeSummary]:
    """Open exchanges with no step progress for `older_than`, longest first (parked ones are listed apart)."""
    return _summaries(conn, select(*_SUMMARY).where(_stuck_where(older_than, now))
                      .order_by(exchanges.c.progressed_at).limit(limit))


def stuck_counts(conn: Connection, *, older_than: timedelta, now: datetime) -> dict[str, int]:
    """How many exchanges are stuck, per state (every moving state named, zeros included)."""
    counts = {s.value: 0 for s in MOVING_STATES}
    counts.update({state: n for state, n in conn.execute(
        select(exchanges.c.state, func.count()).where(_stuck_where(older_than, now)).group_by(exchanges.c.state))})
    return counts


def page(conn: Connection, *, states: list[str] | None = None, before: tuple[datetime, uuid.UUID] | None = None,
         limit: int = PAGE_SIZE) -> list[ExchangeSummary]:
    """Exchanges by last change, newest first; `before` is the (updated_at, id) of the last row seen."""
    query = select(*_SUMMARY)
    if states:
        query = query.where(exchanges.c.state.in_(states))
    if before is not None:
        query = query.where(tuple_(exchanges.c.updated_at, exchanges.c.id) < tuple_(*before))
    return _summaries(conn, query.order_by(exchanges.c.updated_at.desc(), exchanges.c.id.desc()).limit(limit))


def find_exchanges(engine: Engine, query: str, limit: int = PAGE_SIZE) -> list[ExchangeSummary]:
    """Exchanges by id, by account id, by customer id (its accounts'), or by idempotency key; newest first."""
    try:
        as_id = uuid.UUID(query)
    except ValueError:
        where = exchanges.c.idempotency_key == query
    else:
        owned = select(accounts.c.id).where(accounts.c.customer_id == as_id)
        where = (exchanges.c.id == as_id) | (exchanges.c.account_id == as_id) | exchanges.c.account_id.in_(owned)
    with engine.connect() as conn:
        return _summaries(conn, select(*_SUMMARY).where(where)
                          .order_by(exchanges.c.updated_at.desc(), exchanges.c.id.desc()).limit(limit))


def open_findings_count(conn: Connection) -> int:
    f = reconciliation_findings
    return conn.execute(select(func.count()).select_from(f).where(f.c.resolved_at.is_(None))).scalar_one()


@dataclass(frozen=True)
class Dashboard:
    counts: dict[str, int]
    stuck: list[ExchangeSummary]
    stuck_total: int
    parked: list[ExchangeSummary]
    failures: list[ExchangeSummary]
    rows: list[ExchangeSummary]
    findings: list[Any]
    findings_total: int
    outbox: OutboxStats
    processes: list[ProcessView]
    alive: dict[str, int]
    bank_check: CheckState | None

    @property
    def dead_roles(self) -> list[str]:
        """Roles with no live process: nothing moves exchanges (worker), publishes (relay) or rescues them."""
        return [role for role, n in self.alive.items() if n == 0]

    def holder_gone(self, row: ExchangeSummary) -> bool:
        """The exchange's claim is held by a worker that is no longer alive."""
        return holder_alive(row.claimed_by, self.processes) is False

    @property
    def next_cursor(self) -> str | None:
        """The `before` of the next page, when this one is full."""
        if len(self.rows) < PAGE_SIZE:
            return None
        return f"{self.rows[-1].updated_at.isoformat()}|{self.rows[-1].id}"


def dashboard(engine: Engine, *, states: list[str] | None, before: tuple[datetime, uuid.UUID] | None,
              stuck_after: timedelta, dead_after: timedelta, now: datetime) -> Dashboard:
    with engine.connect() as conn:
        views = processes(conn, dead_after=dead_after, now=now)
        return Dashboard(
            counts=counts_by_state(conn),
            stuck=stuck(conn, older_than=stuck_after, now=now),
            stuck_total=sum(stuck_counts(conn, older_than=stuck_after, now=now).values()),
            parked=page(conn, states=[S.NEEDS_ATTENTION], limit=20),
            failures=page(conn, states=[S.FAILED, S.REFUNDED], limit=20),
            rows=page(conn, states=states or None, before=before),
            findings=open_findings(conn, PAGE_SIZE),
            findings_total=open_findings_count(conn),
            outbox=store.stats(conn, now=now),
            processes=views,
            alive=alive_by_role(views),
            bank_check=checks.state_of(conn, checks.BANK_COMPARE),
        )
