"""Our ledger against the bank's record: the one comparison the reconciler and the invariant
checks both make. Plain data in, findings out; no I/O.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from domain.states import ExchangeState

S = ExchangeState


@dataclass(frozen=True)
class Finding:
    exchange_id: uuid.UUID
    kind: str
    detail: str


@dataclass(frozen=True)
class ExchangeFacts:
    """What our side says of one exchange: its state, its target amount, and its credit postings."""

    id: uuid.UUID
    state: str
    to_amount: Decimal | None
    to_currency: str
    credits: int


@dataclass(frozen=True)
class BankPayment:
    """One transfer the bank applied; `reference` is the exchange id it was made for."""

    id: str
    reference: str
    amount: Decimal
    currency: str


def compare(ours: Iterable[ExchangeFacts], paid: Iterable[BankPayment], *,
            known: Mapping[str, object] | None = None) -> list[Finding]:
    """Every disagreement between `ours` and what the bank `paid`, per exchange.

    With `known` (every exchange id we have), a payment for none of them is a finding too.
    """
    by_reference: dict[str, list[BankPayment]] = defaultdict(list)
    for payment in paid:
        by_reference[payment.reference].append(payment)
    findings = [f for row in ours for f in _judge(row, by_reference.get(str(row.id), []))]
    if known is not None:
        findings += [Finding(_uuid(ref), "unknown_exchange", f"the bank paid {p[0].amount} {p[0].currency} "
                             f"(transfer {p[0].id}) for no exchange of ours")
                     for ref, p in by_reference.items() if ref not in known]
    return findings


def _judge(row: ExchangeFacts, transfers: list[BankPayment]) -> list[Finding]:
    findings = []
    if len(transfers) > 1:
        findings.append(Finding(row.id, "paid_twice", f"the bank applied {len(transfers)} transfers"))
    if transfers and row.state == S.REFUNDED:
        findings.append(Finding(row.id, "refunded_but_paid", "refunded here, yet the bank paid the credit"))
    elif transfers and row.credits == 0 and row.state != S.NEEDS_ATTENTION:
        # A parked exchange may be paid at the bank and not yet here: that is why it is parked.
        first = transfers[0]
        findings.append(Finding(row.id, "bank_paid_not_credited",
                                f"the bank paid {first.amount} {first.currency}; no credit in our ledger"))
    if row.credits and not transfers:
        findings.append(Finding(row.id, "credited_not_paid", "credited in our ledger; the bank has no transfer"))
    if transfers and row.credits and (transfers[0].amount, transfers[0].currency) != (row.to_amount, row.to_currency):
        findings.append(Finding(row.id, "amount_differs",
                                f"bank paid {transfers[0].amount} {transfers[0].currency}, "
                                f"we credited {row.to_amount} {row.to_currency}"))
    return findings


def _uuid(reference: str) -> uuid.UUID:
    try:
        return uuid.UUID(reference)
    except ValueError:
        return uuid.UUID(int=0)
