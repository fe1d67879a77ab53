"""The one ledger-vs-bank comparison (domain/reconciliation.py), as plain data."""

from __future__ import annotations

import uuid
from decimal import Decimal

from domain.reconciliation import BankPayment, ExchangeFacts, compare

EXCHANGE = uuid.UUID("11111111-1111-1111-1111-111111111111")


def facts(state: str, credits: int) -> ExchangeFacts:
    return ExchangeFacts(EXCHANGE, state, Decimal("73.10"), "USD", credits)


def paid(amount: str = "73.10", currency: str = "USD", reference: uuid.UUID = EXCHANGE, n: int = 1) -> BankPayment:
    return BankPayment(f"t{n}", str(reference), Decimal(amount), currency)


def kinds(ours: ExchangeFacts, *payments: BankPayment) -> list[str]:
    return [f.kind for f in compare([ours], payments)]


def test_a_completed_exchange_paid_once_for_its_amount_agrees() -> None:
    assert kinds(facts("completed", 1), paid()) == []


def test_two_payments_for_one_exchange_are_paid_twice() -> None:
    assert kinds(facts("completed", 1), paid(n=1), paid(n=2)) == ["paid_twice"]


def test_a_refunded_exchange_the_bank_paid_is_refunded_but_paid_only() -> None:
    assert kinds(facts("refunded", 0), paid()) == ["refunded_but_paid"]


def test_a_payment_without_our_credit_is_a_finding_unless_the_exchange_is_parked_for_it() -> None:
    assert kinds(facts("completed", 0), paid()) == ["bank_paid_not_credited"]
    assert kinds(facts("needs_attention", 0), paid()) == []


def test_our_credit_without_a_payment_is_credited_not_paid() -> None:
    assert kinds(facts("completed", 1)) == ["credited_not_paid"]


def test_a_payment_of_another_amount_or_currency_differs() -> None:
    assert kinds(facts("completed", 1), paid("73.11")) == ["amount_differs"]
    assert kinds(facts("completed", 1), paid(currency="CAD")) == ["amount_differs"]


def test_a_payment_for_no_exchange_of_ours_is_found_only_when_we_say_which_exchanges_exist() -> None:
    stranger = uuid.UUID("22222222-2222-2222-2222-222222222222")
    ours = [facts("completed", 1)]
    payments = [paid(), paid(reference=stranger, n=2)]
    assert compare(ours, payments) == []
    found = compare(ours, payments, known={str(EXCHANGE): True})
    assert [(f.exchange_id, f.kind, f.bank_transfer_id) for f in found] == [(None, "unknown_exchange", "t2")]
    assert found[0].subject == "bank-transfer:t2" and str(stranger) in found[0].detail
