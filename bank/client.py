"""Our client of the bank: real HTTP with connect/read timeouts, and the outcome of every call.

Errors say what we know about the money: BankUnavailable and BankRejected mean the call
was NOT applied; BankOutcomeUnknown (no answer in time) means it may have been.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import requests
from urllib3.exceptions import NewConnectionError

from errors import BankError

T = TypeVar("T")

__all__ = ["BankAnswerUnreadable", "BankChanges", "BankClient", "BankError", "BankOutcomeUnknown", "BankRecord",
           "BankRejected", "BankTransfer", "BankUnavailable"]



class BankUnavailable(BankError):
    """Refused, unreachable or answered 5xx: not applied; worth retrying."""


class BankRejected(BankError):
    """Answered 4xx: not applied, and retrying the same call will not help."""


class BankOutcomeUnknown(BankError):
    """Sent, but no answer in time: the bank may have applied it. Retry with the same key."""


class BankAnswerUnreadable(BankOutcomeUnknown):
    """Answered, but with a body we do not understand: it may have applied. Retry with the same key."""


@dataclass(frozen=True)
class BankTransfer:
    id: str
    status: str  # applied / voided
    amount: Decimal
    currency: str
    replayed: bool = False


@dataclass(frozen=True)
class BankRecord:
    id: str
    reference: str
    status: str
    amount: Decimal
    currency: str
    #: Its place in the bank's change feed (`BankClient.changes`).
    change_seq: int = 0


@dataclass(frozen=True)
class BankChanges:
    """One page of the bank's change feed: the transfers, and the place to ask from next."""

    records: list[BankRecord]
    cursor: int


class BankClient:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs  # type: ignore[arg-type]
            )
        except requests.ConnectTimeout as error:
            raise BankUnavailable(f"bank connect timeout: {error}") from error
        except requests.ReadTimeout as error:
            raise BankOutcomeUnknown(f"bank did not answer within {self.timeout[1]}s") from error
        except requests.ConnectionError as error:
            if _never_connected(error):
                raise BankUnavailable(f"bank unreachable: {error}") from error
            raise BankOutcomeUnknown(f"bank connection lost: {error}") from error
        if response.status_code >= 500:
            raise BankUnavailable(f"bank answered {response.status_code}: {_text(response)}")
        return response

    def transfer(self, *, key: str, reference: str, account: str, currency: str, amount: Decimal) -> BankTransfer:
        """Pay `amount` to `account`; idempotent per key (a retry gets the first answer)."""
        response = self._call(
            "POST",
            "/transfers",
            json={"reference": reference, "account": account, "currency": currency, "amount": str(amount)},
            headers={"Idempotency-Key": key},
        )
        if response.status_code >= 400:
            raise BankRejected(f"bank answered {response.status_code}: {_text(response)}")
        return _transfer(response, replayed=response.headers.get("Idempotent-Replayed") == "true")

    def void(self, *, key: str, reference: str) -> BankTransfer:
        """Make sure `key` will never be applied; returns the applied transfer if it already was."""
        response = self._call("POST", "/transfers/void", json={"idempotency_key": key, "reference": reference})
        if response.status_code >= 400:
            raise BankRejected(f"bank answered {response.status_code}: {_text(response)}")
        return _transfer(response)

    def lookup(self, key: str) -> BankTransfer | None:
        """The bank's record for a key, or None if it has never seen it."""
        response = self._call("GET", f"/transfers/by-key/{key}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise BankRejected(f"bank answered {response.status_code}: {_text(response)}")
        return _transfer(response)

    def all_applied(self) -> list[BankRecord]:
        """Every transfer the bank has applied (for reconciliation and the invariant checks)."""
        response = self._call("GET", "/transfers")
        return _read(response, lambda body: [
            BankRecord(t["id"], t["reference"], t["status"], Decimal(t["amount"]), t["currency"])
            for t in body["transfers"]
        ])

    def changes(self, *, after: int, limit: int = 1000) -> BankChanges:
        """Transfers applied, voided or reversed after place `after` of the bank's change feed."""
        response = self._call("GET", "/transfers/changes", params={"after": after, "limit": limit})
        if response.status_code >= 400:
            raise BankRejected(f"bank answered {response.status_code}: {_text(response)}")
        return _read(response, lambda body: BankChanges(
            [BankRecord(t["id"], t["reference"], t["status"], Decimal(t["amount"]), t["currency"], int(t["change_seq"]))
             for t in body["transfers"]],
            int(body["cursor"]),
        ))

    def reverse(self, transfer_id: str) -> BankTransfer:
        """Take an applied transfer back at the bank (what its staff do to fix a wrong payment)."""
        response = self._call("POST", f"/transfers/{transfer_id}/reverse")
        if response.status_code >= 400:
            raise BankRejected(f"bank answered {response.status_code}: {_text(response)}")
        return _transfer(response)

    def faults(self) -> dict[str, object]:
        return self._call("GET", "/_faults").json()

    def set_faults(self, **faults: object) -> dict[str, object]:
        return self._call("POST", "/_faults", json=faults).json()

    def reset_faults(self) -> None:
        self._call("POST", "/_faults/reset")


def _transfer(response: requests.Response, replayed: bool = False) -> BankTransfer:
    return _read(response, lambda body: BankTransfer(body["id"], body["status"], Decimal(body["amount"]),
                                                     body["currency"], replayed))


def _read(response: requests.Response, parse: Callable[[Any], T]) -> T:
    """The answer's body as `parse` reads it; BankAnswerUnreadable when it is not what we know."""
    try:
        return parse(response.json())
    except (ValueError, KeyError, TypeError, ArithmeticError) as error:
        raise BankAnswerUnreadable(f"bank answered {response.status_code} with a body we cannot read "
                                   f"({type(error).__name__}: {error}): {_text(response)}") from None


def _text(response: requests.Response) -> str:
    return response.text[:300]


def _never_connected(error: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request was never sent."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)
