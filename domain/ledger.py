"""Ledger postings of an exchange: pure data, each balanced per currency by construction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal


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
