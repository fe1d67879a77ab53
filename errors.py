"""The project's error tree: one root, one branch per part, translated to HTTP in web/errors.py.

    FxError
    ├── ConfigError         a setting the application cannot run with (one line, exit 2)
    ├── DomainError         a business rule refused: InvalidTransition, NoRate, AmountError
    ├── WorkflowError       a step's control flow: LostClaim, StepDeferred, BalanceMismatch
    ├── BankError           bank/client.py: BankUnavailable, BankRejected, BankOutcomeUnknown
    ├── OutboxError         outbox/: PublishError, InjectedFault
    └── ClientError         what a client caused; `status` and `code` are its HTTP answer
"""

from __future__ import annotations

from typing import Any


class FxError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(FxError, ValueError):
    """A setting has a value the application cannot run with."""


class DomainError(FxError):
    """A business rule refused; plain Python, raised by `domain`."""


class WorkflowError(FxError):
    """A step could not finish as it is: retried, rolled back or deferred."""


class BankError(FxError):
    """The bank call did not produce a definite success."""


class OutboxError(FxError):
    """The outbox relay could not hand messages to the broker."""


class ClientError(FxError):
    """Base of every error a client can cause; `code` is stable and documented."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.detail = detail


class ValidationFailed(ClientError):
    status = 422
    code = "validation_failed"


class MalformedRequest(ClientError):
    status = 400
    code = "malformed_request"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class UnknownAccount(NotFound):
    code = "unknown_account"


class UnknownExchange(NotFound):
    code = "unknown_exchange"


class UnknownQuote(NotFound):
    code = "unknown_quote"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class AccountInactive(Conflict):
    code = "account_inactive"


class InsufficientFunds(Conflict):
    code = "insufficient_funds"


class QuoteExpired(Conflict):
    """The quote's firm period ended before the exchange named it: ask for a new one."""

    code = "quote_expired"


class QuoteUsed(Conflict):
    """Another exchange has already accepted this quote: each quote is good for one exchange."""

    code = "quote_used"


class RateUnavailable(ClientError):
    """No rate can be quoted for this pair or amount now."""

    status = 422
    code = "no_rate"


class ActionRefused(Conflict):
    """An operator action the exchange's state does not allow, or that the bank cannot back."""

    code = "action_refused"


class IdempotencyKeyReused(ClientError):
    """The same Idempotency-Key came back with a different request body."""

    status = 422
    code = "idempotency_key_reused"
