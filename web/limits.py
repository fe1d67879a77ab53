"""Request budgets (the `limits` library): on the verified identity, never on what a client claims.

- A verified API key spends its own budget (API_RATE_LIMIT).
- Requests without a valid key (none, unknown, revoked, malformed) share one small budget per
  client address (UNVERIFIED_RATE_LIMIT). Once it is spent, the address is refused 429 before
  any key lookup: guessing keys costs the database nothing.
- Failed sign-ins (the portal's password, the operators' Basic auth) are counted per account and
  per address (LOGIN_LIMIT_PER_ACCOUNT, LOGIN_LIMIT_PER_ADDRESS); past either, sign-in is locked
  for the rest of the window, the right password included.

Only a 429 carries `Retry-After`: it says when the window that refused the request frees up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from errors import ClientError, ConfigError
from settings import Settings


class TooManyRequests(ClientError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Budgets:
    #: Request budgets: fixed windows, one counter per key (every API request pays for one hit).
    limiter: RateLimiter
    #: Sign-in failures: a moving window, so a lockout lasts until the oldest failure ages out.
    sign_ins: RateLimiter
    per_key: RateLimitItem
    unverified: RateLimitItem
    login_account: RateLimitItem
    login_address: RateLimitItem


def _item(name: str, text: str) -> RateLimitItem:
    try:
        return parse(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a limit such as '600 per minute'") from None


def install(app: Flask, settings: Settings) -> Budgets:
    storage = storage_from_string(settings.rate_limit_storage_url)
    budgets = Budgets(
        limiter=FixedWindowRateLimiter(storage),
        sign_ins=MovingWindowRateLimiter(storage),
        per_key=_item("API_RATE_LIMIT", settings.api_rate_limit),
        unverified=_item("UNVERIFIED_RATE_LIMIT", settings.unverified_rate_limit),
        login_account=_item("LOGIN_LIMIT_PER_ACCOUNT", settings.login_limit_per_account),
        login_address=_item("LOGIN_LIMIT_PER_ADDRESS", settings.login_limit_per_address),
    )
    app.extensions["fx.budgets"] = budgets
    return budgets


def _budgets() -> Budgets:
    return current_app.extensions["fx.budgets"]


def client_address() -> str:
    return request.remote_addr or "?"


def _refuse(limiter: RateLimiter, item: RateLimitItem, key: str, message: str) -> TooManyRequests:
    reset = limiter.get_window_stats(item, key).reset_time
    return TooManyRequests(message, retry_after=max(1, math.ceil(reset - time.time())))


def check_unverified() -> None:
    """Before a key is looked up: refuse an address whose unverified budget is spent."""
    budgets = _budgets()
    key = "unverified:" + client_address()
    if not budgets.limiter.test(budgets.unverified, key):
        raise _refuse(budgets.limiter, budgets.unverified, key,
                      "Too many requests without a valid API key; retry later.")


def spend_unverified() -> None:
    """A request that did not verify: it counts against its address."""
    budgets = _budgets()
    budgets.limiter.hit(budgets.unverified, "unverified:" + client_address())


def spend_verified(identity: str) -> None:
    """A verified caller's request; TooManyRequests once its budget is spent."""
    budgets = _budgets()
    key = "key:" + identity
    if not budgets.limiter.hit(budgets.per_key, key):
        raise _refuse(budgets.limiter, budgets.per_key, key, "Too many requests for this API key; retry later.")


def check_sign_in(account: str) -> None:
    """Before a password is checked: refuse while the account or the address is locked out."""
    budgets = _budgets()
    for item, key in ((budgets.login_account, "login:" + account.strip().lower()),
                      (budgets.login_address, "login-from:" + client_address())):
        if not budgets.sign_ins.test(item, key):
            raise _refuse(budgets.sign_ins, item, key, "Too many failed sign-ins; wait before trying again.")


def sign_in_failed(account: str) -> None:
    budgets = _budgets()
    budgets.sign_ins.hit(budgets.login_account, "login:" + account.strip().lower())
    budgets.sign_ins.hit(budgets.login_address, "login-from:" + client_address())
