"""The money invariants every fault test (and the chaos run) checks after the dust settles.

- per currency, the ledger sums to zero;
- no balance is negative, and each customer's balance equals its ledger entries;
- each exchange is debited, credited and refunded at most once, and its postings fit its state;
- at the bank, at most one applied credit per exchange, matching our ledger (the same
  comparison the reconciler makes, domain/reconciliation.py), and none for an unknown exchange;
- every exchange is terminal and no outbox row is unpublished (once faults have stopped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, func, select

from bank.client import BankClient
from domain.ledger import EXPECTED_POSTINGS
from domain.reconciliation import BankPayment, ExchangeFacts, compare
from domain.states import TERMINAL_STATES
from models import AccountKind, accounts, balances, exchanges, ledger_entries, outbox_messages


@dataclass
class InvariantReport:
    exchanges: int = 0
    states: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        lines = [f"exchanges: {self.exchanges}  states: {self.states}"]
        lines += [f"VIOLATION: {v}" for v in self.violations] or ["all invariants hold"]
        return "\n".join(lines)


def check(engine: Engine, *, bank: BankClient | None = None, settled: bool = True) -> InvariantReport:
    """Check every invariant; `settled` adds the ones that hold only once faults have stopped."""
    report = InvariantReport()
    v = report.violations
    with engine.connect() as conn:
        for currency, total in conn.execute(
            select(ledger_entries.c.currency, func.sum(ledger_entries.c.amount)).group_by(ledger_entries.c.currency)
        ):
            if Decimal(total) != 0:
                v.append(f"ledger sums to {total} in {currency}")
        for row in conn.execute(select(balances).where((balances.c.available < 0) | (balances.c.held < 0))):
            v.append(f"negative balance {row.account_id}/{row.currency}: {row.available} available, {row.held} held")
        ledger_totals = {
            (r.account_id, r.currency): Decimal(r.total)
            for r in conn.execute(
                select(ledger_entries.c.account_id, ledger_entries.c.currency,
                       func.sum(ledger_entries.c.amount).label("total"))
                .join(accounts, accounts.c.id == ledger_entries.c.account_id)
                .where(accounts.c.kind == AccountKind.CUSTOMER)
                .group_by(ledger_entries.c.account_id, ledger_entries.c.currency)
            )
        }
        for r in conn.execute(select(balances)):
            expected = ledger_totals.get((r.account_id, r.currency), Decimal(0))
            if r.available + r.held != expected:
                v.append(f"balance {r.account_id}/{r.currency} is {r.available}+{r.held}, ledger says {expected}")

        postings: dict[object, Counter[str]] = {}
        for r in conn.execute(
            select(ledger_entries.c.exchange_id, ledger_entries.c.kind,
                   func.count(func.distinct(ledger_entries.c.posting_id)))
            .where(ledger_entries.c.exchange_id.is_not(None))
            .group_by(ledger_entries.c.exchange_id, ledger_entries.c.kind)
        ):
            postings.setdefault(r[0], Counter())[r[1]] = r[2]
        rows = conn.execute(select(exchanges.c.id, exchanges.c.state, exchanges.c.to_amount,
                                  exchanges.c.to_currency)).all()
        unpublished = conn.execute(
            select(func.count()).select_from(outbox_messages).where(outbox_messages.c.published_at.is_(None))
        ).scalar_one()

    report.exchanges = len(rows)
    report.states = dict(Counter(r.state for r in rows))
    for r in rows:
        got = postings.get(r.id, Counter())
        doubled = {kind: n for kind, n in got.items() if n > 1}
        if doubled:
            v.append(f"exchange {r.id} posted more than once: {doubled}")
        if r.state in EXPECTED_POSTINGS and got != EXPECTED_POSTINGS[r.state]:
            v.append(f"exchange {r.id} is {r.state} but has postings {dict(got)}")
        if settled and r.state not in {s.value for s in TERMINAL_STATES}:
            v.append(f"exchange {r.id} is not terminal: {r.state}")

    if settled and unpublished:
        v.append(f"{unpublished} outbox messages unpublished")

    if bank is not None:
        paid = [BankPayment(t.id, t.reference, t.amount, t.currency) for t in bank.all_applied()]
        ours = [ExchangeFacts(r.id, r.state, r.to_amount, r.to_currency, postings.get(r.id, Counter())["credit"])
                for r in rows]
        v += [f"{f.kind} {f.subject}: {f.detail}"
              for f in compare(ours, paid, known={str(r.id): r for r in rows})]
    return report
