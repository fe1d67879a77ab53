"""Firm quotes: priced once, honoured by the one exchange that names them before they expire.

A quote is taken by a compare-and-set in the exchange's accept transaction (`take`): the
exchange and the quote's use commit together or not at all, so a quote is never used twice
and never lost to a request that was refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from domain.fx import AmountTooSmall, NoRate, RateProvider, make_quote
from domain.money import quantize
from errors import QuoteExpired, QuoteUsed, RateUnavailable, UnknownQuote, ValidationFailed
from models import accounts, quotes
from models.base import utcnow
from services.rows import one_or_not_found


@dataclass(frozen=True)
class QuoteRequest:
    from_currency: str
    to_currency: str
    amount: Decimal


def create_quote(engine: Engine, rates: RateProvider, customer_id: uuid.UUID, request: QuoteRequest,
                 ttl: timedelta) -> Any:
    """Price the request and keep the price for `ttl`; RateUnavailable names the field at fault."""
    now = utcnow()
    try:
        priced = make_quote(rates, request.from_currency, request.to_currency, request.amount, now, ttl)
    except AmountTooSmall as error:
        raise RateUnavailable("No rate for this amount.", fields={"amount": [str(error)]}) from None
    except NoRate as error:
        raise RateUnavailable("No rate for this pair now.", fields={"to_currency": [str(error)]}) from None
    row = {"id": uuid.uuid4(), "customer_id": customer_id, "from_currency": request.from_currency,
           "to_currency": request.to_currency, "amount": request.amount, "rate": priced.rate,
           "to_amount": priced.to_amount, "created_at": now, "expires_at": priced.expires_at}
    with engine.begin() as conn:
        conn.execute(insert(quotes), row)
    return get_quote(engine, row["id"], customer_id)


def get_quote(engine: Engine, quote_id: uuid.UUID, customer_id: uuid.UUID | None) -> Any:
    """The quote; UnknownQuote when it does not exist or is another customer's."""
    query = select(quotes).where(quotes.c.id == quote_id)
    if customer_id is not None:
        query = query.where(quotes.c.customer_id == customer_id)
    return one_or_not_found(engine, query, UnknownQuote("No such quote.", fields={"quote_id": ["No such quote."]}))


def status_of(row: Any, now: datetime | None = None) -> str:
    """`open` (it can still be accepted), `used` or `expired`."""
    if row.used_at is not None:
        return "used"
    return "open" if row.expires_at > (now or utcnow()) else "expired"


#: Built once: the quote's use, checked against the exchange it prices and the account's owner.
_TAKE = (
    update(quotes)
    .where(quotes.c.id == bindparam("q_id"), quotes.c.used_at.is_(None), quotes.c.expires_at > bindparam("q_now"),
           quotes.c.from_currency == bindparam("q_from"), quotes.c.to_currency == bindparam("q_to"),
           quotes.c.amount == bindparam("q_amount", type_=quotes.c.amount.type),
           quotes.c.customer_id == select(accounts.c.customer_id).where(
               accounts.c.id == bindparam("q_account")).scalar_subquery())
    .values(used_at=bindparam("q_now"), exchange_id=bindparam("q_exchange"))
    .returning(quotes.c.rate, quotes.c.to_amount, quotes.c.expires_at)
)


def take(conn: Connection, quote_id: uuid.UUID, *, exchange_id: uuid.UUID, account_id: uuid.UUID,
         from_currency: str, to_currency: str, amount: Decimal, now: datetime) -> dict[str, Any]:
    """Use the quote for this exchange, in the caller's transaction: the exchange row's columns it
    sets. Raises UnknownQuote, QuoteExpired, QuoteUsed or ValidationFailed (it prices another request)."""
    row = conn.execute(_TAKE, {"q_id": quote_id, "q_now": now, "q_from": from_currency, "q_to": to_currency,
                               "q_amount": amount, "q_account": account_id, "q_exchange": exchange_id}).first()
    if row is None:
        raise _refusal(conn, quote_id, account_id, from_currency, to_currency, amount, now)
    return {"quote_id": quote_id, "rate": row.rate, "to_amount": row.to_amount, "quote_expires_at": row.expires_at}


def _refusal(conn: Connection, quote_id: uuid.UUID, account_id: uuid.UUID, from_currency: str, to_currency: str,
             amount: Decimal, now: datetime) -> Exception:
    """Why the quote could not be taken; runs only on the unhappy path."""
    owner = select(accounts.c.customer_id).where(accounts.c.id == account_id).scalar_subquery()
    row = conn.execute(select(quotes).where(quotes.c.id == quote_id, quotes.c.customer_id == owner)).first()
    if row is None:
        return UnknownQuote("No such quote.", fields={"quote_id": ["No such quote."]})
    if row.used_at is not None:
        return QuoteUsed("This quote was used by another exchange; ask for a new one.",
                         fields={"quote_id": ["Already used by another exchange."]})
    if row.expires_at <= now:
        return QuoteExpired("This quote has expired; ask for a new one.",
                            fields={"quote_id": [f"Expired at {row.expires_at.isoformat()}."]})
    quoted = {"from_currency": row.from_currency, "to_currency": row.to_currency, "amount": row.amount}
    asked = {"from_currency": from_currency, "to_currency": to_currency, "amount": amount}
    shown = {**quoted, "amount": f"{quantize(row.amount, row.from_currency)} {row.from_currency}"}
    wrong = {name: [f"Must match the quote: {shown[name]}."] for name in quoted if quoted[name] != asked[name]}
    return ValidationFailed("The request does not match its quote.", fields=wrong or {"quote_id": ["Not usable."]})
