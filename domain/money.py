"""Parsing and checking amounts of money: Decimal only, never float."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal

from domain.currencies import minor_unit
from errors import DomainError

#: Plain decimal notation only: no sign, exponent, spaces, NaN or Infinity.
AMOUNT_PATTERN = re.compile(r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$")

#: Every amount column has this many decimals (the largest ISO minor unit is 4).
STORAGE_SCALE = 4


class AmountError(DomainError, ValueError):
    """The text is not an acceptable amount; the message says why, for the client."""


def parse_amount(text: object) -> Decimal:
    """Parse a decimal string like "125.50" exactly; reject numbers sent as JSON floats."""
    if not isinstance(text, str):
        raise AmountError("Must be a decimal string such as \"125.50\", not a JSON number.")
    # fullmatch, not match: `$` also matches before a trailing newline, and Decimal()
    # would then strip it, accepting "10.00\n".
    if not AMOUNT_PATTERN.fullmatch(text):
        raise AmountError("Must be a plain decimal string such as \"125.50\".")
    return Decimal(text)


def decimals_of(amount: Decimal) -> int:
    # normalize() in a context as precise as the amount itself: the default context's
    # 28 digits would round "10000000000.000000000000000001" to a whole number.
    exact = Context(prec=len(amount.as_tuple().digits))
    exponent = amount.normalize(exact).as_tuple().exponent
    assert isinstance(exponent, int)  # finite by construction
    return max(0, -exponent)


def check_amount(amount: Decimal, currency: str | None, maximum: Decimal) -> None:
    """Raise AmountError unless the amount is positive, within bounds and in the currency's minor unit.

    With no (valid) currency, only the bounds are checked: a zero amount is wrong whatever
    the currency turns out to be.
    """
    if amount <= 0:
        raise AmountError("Must be greater than zero.")
    if amount > maximum:
        raise AmountError(f"Must not exceed {maximum}{'' if currency is None else ' ' + currency}.")
    if currency is None:
        return
    allowed = minor_unit(currency)
    if decimals_of(amount) > allowed:
        raise AmountError(f"{currency} allows at most {allowed} decimal places.")


def money_text(amount: Decimal | None, currency: str) -> str | None:
    """Amounts leave the API as strings with the currency's minor unit ("125.50", "1000")."""
    return None if amount is None else str(quantize(amount, currency))


def rate_text(rate: Decimal | None) -> str | None:
    """"0.731", "10": no trailing zeros, never an exponent."""
    return None if rate is None else format(rate.normalize(), "f")


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit (banker's rounding is not used for customer money)."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)
