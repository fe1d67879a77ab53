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
    #: The exchange it is about; None for a bank transfer that matches no exchange of ours.
    exchange_id: uuid.UUID | None
    kind: str
    detail: str
    bank_transfer_id: str | None = None

    @property
    def subject(self) -> str:
        """What it is about, one finding per subject and kind: the exchange, or the bank's transfer."""
        return str(self.exchange_id) if self.exchange_id is not None else f"bank-transfer:{self.bank_transfer_id}"


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
        findings += [Finding(None, "unknown_exchange", f"the bank paid {p.amount} {p.currency} (transfer {p.id}, "
                             f"reference {ref!r}) for no exchange of ours", bank_transfer_id=p.id)
                     for ref, payments in by_reference.items() if ref not in known for p in payments]
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
