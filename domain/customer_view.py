"""What a customer is told about an exchange: plain language, no internals. Plain data, no I/O.

Operators see workers, hosts, error texts and names; a customer sees where the exchange
stands, what happens next, and for a refund or a failure one reason from a fixed list
(`FAILURE_REASONS`), chosen by the code the workflow stored when it gave up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.states import ExchangeState

S = ExchangeState


class CustomerStatus(StrEnum):
    PROCESSING = "processing"
    #: Still moving, but a step failed and is being retried: the customer is told so.
    DELAYED = "delayed"
    #: Parked for a person to decide: the customer waits, the money is safe.
    UNDER_REVIEW = "under_review"
    REFUNDING = "refunding"
    COMPLETED = "completed"
    REFUNDED = "refunded"
    FAILED = "failed"


#: Why an exchange was refunded or failed, by the code stored with the transition that gave up.
FAILURE_REASONS: dict[str, str] = {
    "no_rate": "We could not get a rate for this currency pair, so the exchange did not go ahead.",
    "bank_rejected": "The receiving bank refused the payment.",
    "bank_unavailable": "Our bank could not take the payment after several tries.",
    "bank_unconfirmed": "Our bank did not confirm the payment, so we cancelled it with the bank.",
    "interrupted": "The exchange was interrupted before the payment could be confirmed.",
    "cancelled_by_support": "Our support team cancelled the exchange.",
    "reversed_by_support": "Our support team reversed the exchange.",
}
#: For an exchange that failed or was refunded before failure codes were stored.
UNSPECIFIED_REASON = "The exchange could not be completed."

#: The customer's progress bar: the happy path's milestones.
MILESTONES = ("accepted", "rate_fixed", "debited", "paid", "completed")
_REACHED = {S.PENDING: 1, S.QUOTED: 2, S.DEBITED: 3, S.NEEDS_ATTENTION: 3, S.COMPENSATING: 3, S.REFUNDED: 3,
            S.CREDITED: 4, S.COMPLETED: 5, S.FAILED: 1}


@dataclass(frozen=True)
class CustomerView:
    status: CustomerStatus
    #: One sentence on where the exchange stands and what happens next.
    message: str
    #: Never None for a refunded or failed exchange.
    failure_reason: str | None
    #: How many of `MILESTONES` the exchange reached.
    milestones_reached: int
    #: Nothing more happens by itself: a page need not refresh (terminal, or waiting for a person).
    final: bool


def failure_reason(code: str | None) -> str:
    return FAILURE_REASONS.get(code or "", UNSPECIFIED_REASON)


def describe(state: str, *, failure_code: str | None, retrying: bool, from_currency: str,
             to_currency: str) -> CustomerView:
    """The customer's view of an exchange in `state`; `retrying`: a step failed and will run again."""
    s = ExchangeState(state)
    reached = _REACHED[s]
    if s == S.COMPLETED:
        return CustomerView(CustomerStatus.COMPLETED, f"Done: the {to_currency} is in your balance.", None, reached,
                            True)
    if s == S.REFUNDED:
        return CustomerView(CustomerStatus.REFUNDED, f"Refunded: your {from_currency} is back in your balance.",
                            failure_reason(failure_code), reached, True)
    if s == S.FAILED:
        return CustomerView(CustomerStatus.FAILED, f"Not done: no money moved; your {from_currency} stays available.",
                            failure_reason(failure_code), reached, True)
    if s == S.COMPENSATING:
        return CustomerView(CustomerStatus.REFUNDING, f"We could not complete the exchange and are returning your "
                            f"{from_currency}.", failure_reason(failure_code), reached, False)
    if s == S.NEEDS_ATTENTION:
        return CustomerView(CustomerStatus.UNDER_REVIEW, "Our team is checking this exchange with the bank. Your "
                            "money is safe; you need do nothing, and we will finish or refund it.", None, reached,
                            True)
    if retrying:
        return CustomerView(CustomerStatus.DELAYED, "Delayed: our bank is not answering and we are retrying. Your "
                            "money is held, not lost.", None, reached, False)
    return CustomerView(CustomerStatus.PROCESSING, _processing(s, from_currency, to_currency), None, reached, False)


def of_exchange(row: Any) -> CustomerView:
    """`describe` for an exchange row (its state, failure code, last error and currencies): a last
    error on an exchange still moving means a step failed and will run again."""
    return describe(row.state, failure_code=row.failure_code, retrying=row.last_error is not None,
                    from_currency=row.from_currency, to_currency=row.to_currency)


def _processing(s: ExchangeState, from_currency: str, to_currency: str) -> str:
    if s == S.PENDING:
        return f"Received: we are fixing the rate and holding your {from_currency}."
    if s == S.QUOTED:
        return f"Rate fixed: your {from_currency} is being taken."
    if s == S.DEBITED:
        return f"Your {from_currency} has been taken; your {to_currency} is on its way."
    return f"Your {to_currency} has been paid; finishing up."


@dataclass(frozen=True)
class CustomerEvent:
    at: datetime
    event: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"at": self.at.isoformat(), "event": self.event, "message": self.message}


def customer_events(entries: Iterable[Any], *, failure_code: str | None, amount: str, from_currency: str,
                    to_amount: str | None, to_currency: str) -> list[CustomerEvent]:
    """The timeline a customer may see: what happened to their money, from the steps' entries
    (`step`, `outcome`, `at`, `detail`); workers, errors, reconciler and operator entries are left out."""
    out: list[CustomerEvent] = []
    for e in entries:
        said = _say(e.step, e.outcome, e.detail or {}, failure_code=failure_code, amount=amount,
                    from_currency=from_currency, to_amount=to_amount, to_currency=to_currency)
        if said is None or (out and out[-1].event == said[0] == "delayed"):
            continue  # one "delayed" per spell of retries
        out.append(CustomerEvent(e.at, *said))
    return out


def _say(step: str, outcome: str, detail: Mapping[str, Any], *, failure_code: str | None, amount: str,
         from_currency: str, to_amount: str | None, to_currency: str) -> tuple[str, str] | None:
    if step == "accept":
        return "accepted", f"We received your exchange of {amount} {from_currency}."
    if outcome in ("retrying", "interrupted"):
        return "delayed", "Delayed: our bank is not answering and we are retrying. Your money is held, not lost."
    if outcome == "parked":
        return "under_review", "Our team is checking this exchange with the bank. Your money is safe."
    if step == "quote" and outcome == "succeeded":
        quoted = " as quoted" if detail.get("quote_id") else ""
        return "rate_fixed", f"Rate fixed at {detail.get('rate', '?')} {to_currency} per {from_currency}{quoted}."
    if step == "debit" and outcome == "succeeded":
        return "debited", f"{amount} {from_currency} taken from your balance."
    if step == "credit" and outcome == "succeeded":
        return "paid", f"{to_amount} {to_currency} paid into your balance."
    if step == "complete" and outcome == "succeeded":
        return "completed", "Exchange complete."
    if step == "compensate" and outcome == "compensated":
        return "refunded", f"{amount} {from_currency} returned to your balance. {failure_reason(failure_code)}"
    if outcome == "failed" and step in ("quote", "debit"):
        return "failed", f"The exchange did not go ahead. {failure_reason(failure_code)}"
    return None
