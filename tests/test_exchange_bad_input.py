"""Every malformed POST /api/exchanges gets one precise 4xx, in the one error shape, and writes nothing.

The table below is the contract: one row per way a client can get the request wrong,
with the status, the error code and the field the answer must name. Each row runs on
PostgreSQL and on SQLite (the `client` fixture is parametrized over both).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, update

from models import accounts, balances, exchange_events, exchanges, ledger_entries, outbox_messages
from services.accounts import HOUSE_ACCOUNT_ID
from settings import Settings
from web.api import IDEMPOTENCY_KEY_MAX_CHARS

MAX_AMOUNT = Settings().max_exchange_amount
MAX_BODY_BYTES = Settings().max_request_bytes
#: Deep enough to exhaust the JSON decoder's recursion, small enough to stay under MAX_BODY_BYTES.
NESTING_DEPTH = 2500

_DROP = object()  # marks a field to leave out of the otherwise valid body


def body(account_id: str, /, **changes: Any) -> dict[str, Any]:
    """A valid request body with some fields changed (or dropped with _DROP)."""
    valid: dict[str, Any] = {"account": account_id, "from_currency": "CAD", "to_currency": "USD", "amount": "10.00"}
    valid.update(changes)
    return {name: value for name, value in valid.items() if value is not _DROP}


def as_json(**changes: Any) -> Callable[[str], dict[str, Any]]:
    return lambda account: {"json": body(account, **changes)}


def raw(data: str | bytes, content_type: str = "application/json") -> Callable[[str], dict[str, Any]]:
    return lambda account: {"data": data, "content_type": content_type}


def with_header(name: str, value: str) -> Callable[[str], dict[str, Any]]:
    return lambda account: {"json": body(account), "headers": {name: value}}


def set_status(status: str) -> Callable[[Engine, uuid.UUID], None]:
    def setup(engine: Engine, account: uuid.UUID) -> None:
        with engine.begin() as conn:
            conn.execute(update(accounts).where(accounts.c.id == account).values(status=status))

    return setup


@dataclass(frozen=True)
class Case:
    request: Callable[[str], dict[str, Any]]
    status: int
    code: str
    #: Fields the error must name (all of them).
    fields: tuple[str, ...]
    setup: Callable[[Engine, uuid.UUID], None] | None = field(default=None)


CASES: dict[str, Case] = {
    # Wrong JSON types.
    "amount-as-json-float": Case(as_json(amount=10.5), 422, "validation_failed", ("amount",)),
    "amount-as-json-integer": Case(as_json(amount=10), 422, "validation_failed", ("amount",)),
    "amount-as-boolean": Case(as_json(amount=True), 422, "validation_failed", ("amount",)),
    "amount-as-nested-object": Case(as_json(amount={"value": "10.00"}), 422, "validation_failed", ("amount",)),
    "account-as-integer": Case(as_json(account=12345), 422, "validation_failed", ("account",)),
    "from-currency-as-number": Case(as_json(from_currency=124), 422, "validation_failed", ("from_currency",)),
    "to-currency-null": Case(as_json(to_currency=None), 422, "validation_failed", ("to_currency",)),
    # Amounts out of range or precision.
    "amount-negative": Case(as_json(amount="-10.00"), 422, "validation_failed", ("amount",)),
    "amount-zero": Case(as_json(amount="0"), 422, "validation_failed", ("amount",)),
    "amount-zero-with-decimals": Case(as_json(amount="0.00"), 422, "validation_failed", ("amount",)),
    "amount-cad-three-decimals": Case(as_json(amount="10.001"), 422, "validation_failed", ("amount",)),
    "amount-jpy-with-decimals": Case(
        as_json(from_currency="JPY", to_currency="USD", amount="1.5"), 422, "validation_failed", ("amount",)
    ),
    "amount-exponent-1e400": Case(as_json(amount="1e400"), 422, "validation_failed", ("amount",)),
    "amount-twenty-digits": Case(as_json(amount="99999999999999999999"), 422, "validation_failed", ("amount",)),
    "amount-above-maximum": Case(
        as_json(amount=str(MAX_AMOUNT + Decimal("0.01"))), 422, "validation_failed", ("amount",)
    ),
    "amount-nan": Case(as_json(amount="NaN"), 422, "validation_failed", ("amount",)),
    "amount-leading-space": Case(as_json(amount=" 10.00"), 422, "validation_failed", ("amount",)),
    "amount-trailing-newline": Case(as_json(amount="10.00\n"), 422, "validation_failed", ("amount",)),
    "amount-explicit-plus-sign": Case(as_json(amount="+10.00"), 422, "validation_failed", ("amount",)),
    # Currencies.
    "currency-unknown-xxx": Case(as_json(from_currency="XXX"), 422, "validation_failed", ("from_currency",)),
    "currency-lower-case": Case(as_json(to_currency="usd"), 422, "validation_failed", ("to_currency",)),
    "currency-iso-but-not-traded": Case(as_json(to_currency="SEK"), 422, "validation_failed", ("to_currency",)),
    "currency-same-both-sides": Case(as_json(to_currency="CAD"), 422, "validation_failed", ("to_currency",)),
    # Missing and extra fields.
    "missing-account": Case(as_json(account=_DROP), 422, "validation_failed", ("account",)),
    "missing-from-currency": Case(as_json(from_currency=_DROP), 422, "validation_failed", ("from_currency",)),
    "missing-to-currency": Case(as_json(to_currency=_DROP), 422, "validation_failed", ("to_currency",)),
    "missing-amount": Case(as_json(amount=_DROP), 422, "validation_failed", ("amount",)),
    "empty-object": Case(
        raw("{}"), 422, "validation_failed", ("account", "from_currency", "to_currency", "amount")
    ),
    "unknown-extra-field": Case(as_json(note="hi"), 422, "validation_failed", ("note",)),
    # The body itself.
    "body-not-json": Case(raw("{not json"), 400, "malformed_request", ("body",)),
    "body-empty": Case(raw(""), 400, "malformed_request", ("body",)),
    "body-json-list": Case(raw("[]"), 400, "malformed_request", ("body",)),
    "body-json-string": Case(raw('"exchange"'), 400, "malformed_request", ("body",)),
    "body-json-null": Case(raw("null"), 400, "malformed_request", ("body",)),
    "body-deeply-nested-arrays": Case(
        raw("[" * NESTING_DEPTH + "]" * NESTING_DEPTH), 400, "malformed_request", ("body",)
    ),
    "body-deeply-nested-objects": Case(
        raw('{"a":' * NESTING_DEPTH + "1" + "}" * NESTING_DEPTH), 400, "malformed_request", ("body",)
    ),
    "body-too-large": Case(
        raw(json.dumps({"note": "x" * (MAX_BODY_BYTES + 1)})), 413, "body_too_large", ("body",)
    ),
    "content-type-text-plain": Case(
        lambda account: {"data": json.dumps(body(account)), "content_type": "text/plain"},
        400, "malformed_request", ("Content-Type",),
    ),
    "content-type-form": Case(
        lambda account: {"data": body(account)}, 400, "malformed_request", ("Content-Type",)
    ),
    # The Idempotency-Key header.
    "idempotency-key-too-long": Case(
        with_header("Idempotency-Key", "k" * (IDEMPOTENCY_KEY_MAX_CHARS + 1)),
        400, "malformed_request", ("Idempotency-Key",),
    ),
    "idempotency-key-with-spaces": Case(
        with_header("Idempotency-Key", "my key"), 400, "malformed_request", ("Idempotency-Key",)
    ),
    "idempotency-key-empty": Case(with_header("Idempotency-Key", ""), 400, "malformed_request", ("Idempotency-Key",)),
    # The account.
    "account-not-a-uuid": Case(as_json(account="not-a-uuid"), 422, "validation_failed", ("account",)),
    "account-unknown": Case(as_json(account=str(uuid.uuid4())), 404, "unknown_account", ("account",)),
    "account-is-the-house": Case(as_json(account=str(HOUSE_ACCOUNT_ID)), 404, "unknown_account", ("account",)),
    "account-frozen": Case(as_json(), 409, "account_inactive", ("account",), setup=set_status("frozen")),
    "account-closed": Case(as_json(), 409, "account_inactive", ("account",), setup=set_status("closed")),
    # Money.
    "insufficient-funds": Case(as_json(amount="1000.01"), 409, "insufficient_funds", ("amount",)),
    "no-balance-in-that-currency": Case(
        as_json(from_currency="EUR", to_currency="USD"), 409, "insufficient_funds", ("amount",)
    ),
}


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything a request could write: row counts, and every balance."""
    with engine.connect() as conn:
        state: dict[str, Any] = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (exchanges, outbox_messages, exchange_events, ledger_entries)
        }
        state["balances"] = [
            tuple(row)
            for row in conn.execute(
                select(balances.c.account_id, balances.c.currency, balances.c.available, balances.c.held)
                .order_by(balances.c.account_id, balances.c.currency)
            )
        ]
    return state


def assert_error_shape(response: Any, code: str, fields: tuple[str, ...]) -> None:
    assert response.mimetype == "application/json"
    text = response.get_data(as_text=True)
    for leak in ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite3"):
        assert leak not in text, f"{leak!r} leaked into {text[:300]}"
    payload = response.get_json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) <= {"code", "message", "fields"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    for name in fields:
        assert name in error["fields"], f"{name!r} not named in {error['fields']}"
        problems = error["fields"][name]
        assert problems and all(isinstance(problem, str) and problem for problem in problems)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_malformed_exchange_request_gets_a_precise_error_and_writes_nothing(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, case: Case
) -> None:
    if case.setup is not None:
        case.setup(engine, funded_account)
    before = snapshot(engine)

    response = client.post("/api/exchanges", **case.request(str(funded_account)))

    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    assert_error_shape(response, case.code, case.fields)
    assert snapshot(engine) == before


def test_the_table_covers_at_least_two_dozen_malformed_requests() -> None:
    assert len(CASES) >= 24


def test_a_valid_request_after_a_refused_one_is_still_accepted(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    # Guards the table against passing because every request fails: the same client
    # and account accept the valid body the table's rows are derived from.
    assert client.post("/api/exchanges", json=body(str(funded_account), amount="1000.01")).status_code == 409
    response = client.post("/api/exchanges", json=body(str(funded_account)))
    assert response.status_code == 202
    after = snapshot(engine)
    assert (after["exchanges"], after["outbox_messages"], after["exchange_events"]) == (1, 1, 1)
