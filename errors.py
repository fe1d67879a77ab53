"""The domain's errors. Each maps to one HTTP answer in web/errors.py."""

from __future__ import annotations

from typing import Any


class ExchangeServiceError(Exception):
    """Base of every error a client can cause; `code` is stable and documented."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.detail = detail


class ValidationFailed(ExchangeServiceError):
    status = 422
    code = "validation_failed"


class MalformedRequest(ExchangeServiceError):
    status = 400
    code = "malformed_request"


class NotFound(ExchangeServiceError):
    status = 404
    code = "not_found"


class UnknownAccount(NotFound):
    code = "unknown_account"


class UnknownExchange(NotFound):
    code = "unknown_exchange"


class AccountInactive(ExchangeServiceError):
    status = 409
    code = "account_inactive"


class InsufficientFunds(ExchangeServiceError):
    status = 409
    code = "insufficient_funds"


class IdempotencyKeyReused(ExchangeServiceError):
    """The same Idempotency-Key came back with a different request body."""

    status = 422
    code = "idempotency_key_reused"
