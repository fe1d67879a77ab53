"""Exchange rates and quotes. The provider is an interface; the default reads a rate table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

from domain.money import quantize
from errors import DomainError

#: Rates carry this many decimals (the `rate` column's scale).
RATE_DECIMALS = 10
#: Value of one unit of each currency in US dollars: the embedded default's table.
DEFAULT_USD_VALUES: dict[str, Decimal] = {
    "USD": Decimal("1"),
    "CAD": Decimal("0.7310"),
    "EUR": Decimal("1.0850"),
    "GBP": Decimal("1.2700"),
    "JPY": Decimal("0.006700"),
    "CHF": Decimal("1.1300"),
    "AUD": Decimal("0.6550"),
}


class NoRate(DomainError):
    """The provider has no rate for this pair; the exchange cannot go ahead."""


class AmountTooSmall(NoRate):
    """The amount converts to less than the target currency's smallest unit."""


@dataclass(frozen=True)
class Quote:
    rate: Decimal
    to_amount: Decimal
    expires_at: datetime


class RateProvider(Protocol):
    def rate(self, source: str, target: str) -> Decimal:
        """Units of `target` for one unit of `source`; NoRate if unknown."""
        ...


class TableRateProvider:
    """Cross rates through each currency's value in a common unit (US dollars)."""

    def __init__(self, usd_values: dict[str, Decimal]) -> None:
        self.usd_values = dict(usd_values)

    def rate(self, source: str, target: str) -> Decimal:
        try:
            raw = self.usd_values[source] / self.usd_values[target]
        except KeyError as missing:
            raise NoRate(f"no rate for {source}/{target}: {missing} is not in the rate table") from None
        return raw.quantize(Decimal(1).scaleb(-RATE_DECIMALS), rounding=ROUND_HALF_EVEN)


def parse_rate_table(text: str) -> dict[str, Decimal]:
    """"CAD=0.7310,EUR=1.0850": each currency's value in US dollars."""
    table = {"USD": Decimal(1)}
    for item in filter(None, (part.strip() for part in text.split(","))):
        code, _, value = item.partition("=")
        table[code.strip().upper()] = Decimal(value)
    return table


def make_quote(provider: RateProvider, source: str, target: str, amount: Decimal, now: datetime,
               ttl: timedelta) -> Quote:
    rate = provider.rate(source, target)
    to_amount = quantize(amount * rate, target)
    if to_amount <= 0:
        raise AmountTooSmall(f"{amount} {source} is worth less than the smallest unit of {target}")
    return Quote(rate=rate, to_amount=to_amount, expires_at=now + ttl)
