"""The ledger's rules: every posting an account or an exchange makes, and which ones each
terminal state must have. Pure data, each posting balanced per currency by construction
(and again by the database: a deferred constraint trigger rejects an unbalanced posting).
services/ledger.py writes them; nothing else builds ledger entries.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal

from domain.states import ExchangeState

#: The house/settlement account, created by the first migration. It is the bank's side
#: of every posting, so the ledger sums to zero per currency from the first funding on.
HOUSE_ACCOUNT_ID = uuid.UUID("00000000-0000-0000-0000-000000000001")

#: Which postings an exchange in each terminal state has, exactly once each.
EXPECTED_POSTINGS: dict[ExchangeState, Counter[str]] = {
    ExchangeState.COMPLETED: Counter({"debit": 1, "credit": 1}),
    ExchangeState.REFUNDED: Counter({"debit": 1, "refund": 1}),
    ExchangeState.FAILED: Counter(),
}


@dataclass(frozen=True)
class Entry:
    account_id: uuid.UUID
    currency: str
    #: Positive credits the account, negative debits it.
    amount: Decimal


@dataclass(frozen=True)
class Posting:
    kind: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for entry in self.entries:
            if entry.amount == 0:
                raise ValueError("a ledger entry cannot be zero")
            totals[entry.currency] += entry.amount
        unbalanced = {c: t for c, t in totals.items() if t != 0}
        if unbalanced:
            raise ValueError(f"posting {self.kind} does not balance: {unbalanced}")


def transfer(kind: str, *, payer: uuid.UUID, payee: uuid.UUID, currency: str, amount: Decimal) -> Posting:
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return Posting(kind, (Entry(payer, currency, -amount), Entry(payee, currency, amount)))


def debit(customer: uuid.UUID, house: uuid.UUID, currency: str, amount: Decimal) -> Posting:
    """The customer's held source amount goes to the house."""
    return transfer("debit", payer=customer, payee=house, currency=currency, amount=amount)


def credit(customer: uuid.UUID, house: uuid.UUID, currency: str, amount: Decimal) -> Posting:
    """The house pays the customer the target amount the bank settled."""
    return transfer("credit", payer=house, payee=customer, currency=currency, amount=amount)


def refund(customer: uuid.UUID, house: uuid.UUID, currency: str, amount: Decimal) -> Posting:
    """Compensation: the debit goes back to the customer."""
    return transfer("refund", payer=house, payee=customer, currency=currency, amount=amount)


def funding(customer: uuid.UUID, house: uuid.UUID, currency: str, amount: Decimal) -> Posting:
    """An account's opening balance, paid in from the house."""
    return transfer("funding", payer=house, payee=customer, currency=currency, amount=amount)
