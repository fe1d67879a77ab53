"""Who may call what: API keys, other customers' money, CSRF, secrets in logs, rate limits, body size.

Every test runs on PostgreSQL and SQLite (the `engine` fixture). A refused request is
checked for what it answers (status, the one error shape, WWW-Authenticate) and for what
it did not do: `snapshot` compares every row a request could write before and after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import ApiCustomer, settings_for
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from app import create_app
from models import Base, api_keys, balances, exchanges
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key, revoke_api_key
from services.exchanges import ExchangeRequest, create_exchange
from settings import Settings
from tests.support.portal import PASSWORD, assert_unauthorized, exchange_form, sign_in, snapshot

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = Settings().max_request_bytes
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def exchange_body(account: uuid.UUID | str, amount: str = "10.00") -> dict[str, str]:
    return {"account": str(account), "from_currency": "CAD", "to_currency": "USD", "amount": amount}


def secret_of(key: str) -> str:
    """The part of a key that proves it: `fxk_<prefix>_<secret>`."""
    return key.split("_", 2)[2]


def app_for(engine: Engine, **overrides: Any) -> Flask:
    app = create_app(settings_for(engine, **overrides))
    app.extensions["fx.engine"].dispose()
    app.extensions["fx.engine"] = engine
    return app


def flask_cli(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    """`flask --app app <args>` in its own process, on the test's database."""
    env = {**os.environ, "DATABASE_URL": engine.url.render_as_string(hide_password=False), "SENTRY_DSN": "",
           "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


class Other:
    """A second customer, with a funded account, an exchange and an API key of their own."""

    def __init__(self, engine: Engine) -> None:
        self.id = create_customer(engine, "Other Customer", email="other@example.com", password="other-password")
        self.api_key = issue_api_key(engine, role=Role.CUSTOMER, label="other", customer_id=self.id)
        self.account = open_account(engine, "Other Customer", {"CAD": Decimal("500.00")}, customer_id=self.id)
        self.exchange = create_exchange(engine, ExchangeRequest(self.account, "CAD", "USD", Decimal("20.00")),
                                        queue="exchanges", idempotency_key="order-1", owner=self.id).exchange_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def other(engine: Engine) -> Other:
    return Other(engine)


# --- other customers' accounts and exchanges ---------------------------------------------


@pytest.mark.parametrize("idempotency_key", [None, "order-1"], ids=["no-key", "the-other-customers-key"])
def test_an_exchange_from_another_customers_account_is_refused_as_unknown_and_writes_nothing(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID, other: Other, idempotency_key: str | None
) -> None:
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    before = snapshot(engine)

    # With the other customer's own Idempotency-Key and body, too: not a replay of their exchange.
    response = client.post("/api/exchanges", json=exchange_body(other.account, "20.00"), headers=headers)

    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "unknown_account"
    assert error["fields"] == {"account": ["No such account."]}
    assert str(other.exchange) not in response.get_data(as_text=True)
    assert snapshot(engine) == before


@pytest.mark.parametrize("path", ["/api/exchanges/{exchange}", "/api/exchanges/{exchange}/timeline",
                                  "/api/accounts/{account}"], ids=["exchange", "timeline", "account"])
def test_another_customers_exchange_timeline_and_account_answer_404_exactly_like_ids_that_do_not_exist(
    app: Flask, client: FlaskClient, funded_account: uuid.UUID, other: Other, path: str
) -> None:
    theirs = client.get(path.format(exchange=other.exchange, account=other.account))
    missing = client.get(path.format(exchange=UNKNOWN_ID, account=UNKNOWN_ID))

    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()  # nothing tells "not yours" from "does not exist"
    assert theirs.get_json()["error"]["code"] in {"unknown_exchange", "unknown_account"}
    # ...while their owner reads them.
    owner = app.test_client().get(path.format(exchange=other.exchange, account=other.account), headers=other.headers)
    assert owner.status_code == 200


def test_the_portal_shows_no_exchange_of_another_customer(
    anonymous_client: FlaskClient, customer: ApiCustomer, other: Other
) -> None:
    sign_in(anonymous_client)
    response = anonymous_client.get(f"/exchanges/{other.exchange}")
    assert response.status_code == 404
    assert str(other.account) not in response.get_data(as_text=True)


def test_a_forged_portal_form_naming_another_customers_account_is_refused_and_writes_nothing(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID, other: Other
) -> None:
    sign_in(anonymous_client)
    form = exchange_form(anonymous_client, account=str(other.account), from_currency="CAD", to_currency="USD",
                         amount="20.00")
    before = snapshot(engine)

    response = anonymous_client.post("/exchanges", data=form)

    assert response.status_code == 404
    assert "No such account." in response.get_data(as_text=True)
    assert snapshot(engine) == before


# --- API keys --------------------------------------------------------------------------


def bad_authorizations(customer: ApiCustomer) -> dict[str, str]:
    key, secret = customer.api_key, secret_of(customer.api_key)
    prefix = key.split("_")[1]
    return {
        "basic-scheme": "Basic dGVzdEBleGFtcGxlLmNvbTp0ZXN0LXBhc3N3b3Jk",
        "scheme-only": "Bearer",
        "empty-key": "Bearer    ",
        "other-scheme": f"Token {key}",
        "no-scheme": key,
        "not-a-key": "Bearer not-a-key",
        "prefix-only": f"Bearer fxk_{prefix}",
        "empty-parts": "Bearer fxk__",
        "upper-case-tag": f"Bearer FXK_{prefix}_{secret}",
        "wrong-secret": f"Bearer fxk_{prefix}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",
        "secret-with-extra": f"Bearer {key}x",
        "unknown-prefix": f"Bearer fxk_{'0' * 10}_{secret}",
        "prefix-with-nul": f"Bearer fxk_{prefix[:4]}\x00{prefix[4:]}_{secret}",
        "non-ascii-prefix": f"Bearer fxk_\u00e9\u00e9_{secret}",
        "two-keys": f"Bearer {key} {key}",
    }


CUSTOMER_CALLS = [
    ("get", "/api/exchanges/{exchange}"),
    ("get", "/api/exchanges/{exchange}/timeline"),
    ("get", "/api/accounts/{account}"),
    ("post", "/api/exchanges"),
]


def call_every_operation(client: FlaskClient, account: uuid.UUID, exchange: uuid.UUID,
                         headers: dict[str, str]) -> list[Any]:
    return [getattr(client, method)(path.format(account=account, exchange=exchange), headers=headers,
                                    json=exchange_body(account) if method == "post" else None)
            for method, path in CUSTOMER_CALLS]


def test_every_operation_refuses_a_request_without_a_key(
    anonymous_client: FlaskClient, engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    exchange = create_exchange(engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("1.00")),
                               queue="exchanges").exchange_id
    before = snapshot(engine)
    for response in call_every_operation(anonymous_client, funded_account, exchange, {}):
        assert_unauthorized(response)
        assert "Bearer" in response.get_json()["error"]["message"]  # says how to send the key
    assert snapshot(engine) == before


@pytest.mark.parametrize("case", list(bad_authorizations(ApiCustomer(uuid.uuid4(), "fxk_0123456789_s3cret"))))
def test_every_operation_refuses_a_malformed_or_wrong_key_with_401_and_writes_nothing(
    anonymous_client: FlaskClient, engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID, case: str
) -> None:
    authorization = bad_authorizations(customer)[case]
    exchange = create_exchange(engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("1.00")),
                               queue="exchanges").exchange_id
    before = snapshot(engine)

    responses = call_every_operation(anonymous_client, funded_account, exchange, {"Authorization": authorization})

    for response in responses:
        assert_unauthorized(response)
        assert secret_of(customer.api_key) not in response.get_data(as_text=True)
    assert snapshot(engine) == before


def test_a_key_revoked_by_the_service_is_refused_from_the_next_request_on(
    client: FlaskClient, engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    assert client.get(f"/api/accounts/{funded_account}").status_code == 200
    assert revoke_api_key(engine, customer.api_key.split("_")[1])

    for response in call_every_operation(client, funded_account, uuid.uuid4(), {}):
        assert_unauthorized(response)
    assert not revoke_api_key(engine, customer.api_key.split("_")[1])  # revoking twice changes nothing


@pytest.mark.process
def test_a_key_revoked_with_the_cli_is_refused_and_other_keys_keep_working(
    app: Flask, client: FlaskClient, engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    second = issue_api_key(engine, role=Role.CUSTOMER, label="second", customer_id=customer.id)
    prefix = customer.api_key.split("_")[1]

    revoked = flask_cli(engine, "api-key", "revoke", prefix)

    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "revoked"
    assert_unauthorized(client.get(f"/api/accounts/{funded_account}"))
    second_client = app.test_client()
    assert second_client.get(f"/api/accounts/{funded_account}",
                             headers={"Authorization": f"Bearer {second}"}).status_code == 200
    again = flask_cli(engine, "api-key", "revoke", prefix)
    assert again.returncode != 0
    assert "no active key with that prefix" in again.stderr


def test_an_operator_key_is_refused_by_the_customer_api(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    operator_key = issue_api_key(engine, role=Role.OPERATOR, label="alice")
    exchange = create_exchange(engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("1.00")),
                               queue="exchanges").exchange_id
    before = snapshot(engine)

    for response in call_every_operation(anonymous_client, funded_account, exchange,
                                         {"Authorization": f"Bearer {operator_key}"}):
        assert_unauthorized(response)
    assert snapshot(engine) == before


def test_a_customer_key_is_refused_by_the_operations_pages_and_api(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    exchange = create_exchange(engine, ExchangeRequest(funded_account, "CAD", "USD", Decimal("1.00")),
                               queue="exchanges").exchange_id
    before = snapshot(engine)

    responses = [
        client.get("/ops/"),
        client.get(f"/ops/exchanges/{exchange}"),
        client.post(f"/api/ops/exchanges/{exchange}/actions/cancel"),
        client.post(f"/api/ops/exchanges/{exchange}/actions/retry"),
    ]

    for response in responses:
        assert_unauthorized(response, realm="Basic")
    assert snapshot(engine) == before


# --- web forms -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token"], ids=["missing", "empty", "wrong"])
def test_an_exchange_form_without_its_csrf_token_is_refused_with_400_and_writes_nothing(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID, token: str | None
) -> None:
    sign_in(anonymous_client)
    form = exchange_form(anonymous_client, account=str(funded_account), from_currency="CAD", to_currency="USD",
                         amount="10.00")
    if token is None:
        del form["csrf_token"]
    else:
        form["csrf_token"] = token
    before = snapshot(engine)

    response = anonymous_client.post("/exchanges", data=form)

    assert response.status_code == 400
    assert "CSRF" in response.get_json()["error"]["message"]
    assert snapshot(engine) == before


def test_a_double_submitted_exchange_form_creates_one_exchange_and_both_answers_show_it(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    sign_in(anonymous_client)
    form = exchange_form(anonymous_client, account=str(funded_account), from_currency="CAD", to_currency="USD",
                         amount="10.00")

    first = anonymous_client.post("/exchanges", data=form)
    second = anonymous_client.post("/exchanges", data=form)

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    with engine.connect() as conn:
        ids = conn.execute(select(exchanges.c.id).where(exchanges.c.account_id == funded_account)).scalars().all()
    assert len(ids) == 1
    assert first.headers["Location"] == f"/exchanges/{ids[0]}"
    with engine.connect() as conn:
        held = conn.execute(select(balances.c.held).where(balances.c.account_id == funded_account,
                                                          balances.c.currency == "CAD")).scalar_one()
    assert held == Decimal("10.00")  # held once
    page = anonymous_client.get(first.headers["Location"])
    assert page.status_code == 200
    assert 'id="state">processing<' in page.get_data(as_text=True)


# --- secrets ---------------------------------------------------------------------------


def test_api_keys_and_passwords_never_reach_the_logs_or_error_bodies(
    app: Flask, engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID, other: Other,
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator_key = issue_api_key(engine, role=Role.OPERATOR, label="alice")
    revoked_key = issue_api_key(engine, role=Role.CUSTOMER, label="old", customer_id=customer.id)
    revoke_api_key(engine, revoked_key.split("_")[1])
    secrets = {customer.api_key: secret_of(customer.api_key), other.api_key: secret_of(other.api_key),
               operator_key: secret_of(operator_key), revoked_key: secret_of(revoked_key)}
    prefix, secret = customer.api_key.split("_")[1], secret_of(customer.api_key)
    api = app.test_client()
    bodies: list[str] = []
    # Every logger at DEBUG, including those set quieter on their own ("sqlalchemy" is WARN): so
    # the SQL, with its parameters, is captured too.
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)

    def send(method: str, path: str, key: str | None = None, **kwargs: Any) -> int:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        response = getattr(api, method)(path, headers=headers, **kwargs)
        bodies.append(response.get_data(as_text=True))
        return response.status_code

    assert send("get", f"/api/accounts/{funded_account}", customer.api_key) == 200
    assert send("post", "/api/exchanges", customer.api_key, json=exchange_body(funded_account)) == 202
    assert send("post", "/api/exchanges", customer.api_key, json=exchange_body(funded_account, "1.001")) == 422
    assert send("post", "/api/exchanges", customer.api_key, json=exchange_body(other.account)) == 404
    assert send("get", f"/api/accounts/{funded_account}", f"fxk_{prefix}_{secret[::-1]}") == 401
    assert send("get", f"/api/accounts/{funded_account}", f"{customer.api_key}-and-more") == 401
    assert send("get", f"/api/accounts/{funded_account}", revoked_key) == 401
    assert send("get", f"/api/accounts/{funded_account}", operator_key) == 401
    assert send("get", "/ops/", customer.api_key) == 401
    assert send("get", "/ops/", operator_key) == 200
    assert send("get", f"/api/accounts/{funded_account}",
                headers={"Authorization": f"Basic test@example.com:{PASSWORD}"}) == 401
    portal = app.test_client()
    assert sign_in(portal, password=PASSWORD + "-wrong").status_code == 401
    assert sign_in(portal, password=PASSWORD).status_code == 302
    bodies.append(portal.get("/").get_data(as_text=True))

    logged = caplog.text
    assert "api_keys" in logged, "the key lookups' SQL was not captured: the check below would prove nothing"
    assert prefix in logged  # the public part may be logged (it names the key)...
    for text in (logged, *bodies):
        for secret_part in secrets.values():
            assert secret_part not in text  # ...the secret never
        assert PASSWORD not in text
        assert "other-password" not in text


@pytest.mark.process
def test_the_cli_prints_a_new_key_once_and_the_database_keeps_only_its_hash(
    engine: Engine, customer: ApiCustomer
) -> None:
    created = flask_cli(engine, "api-key", "create", "--customer", str(customer.id), "--label", "laptop")

    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key, once, and nothing else
    tag, prefix, secret = key.split("_", 2)
    assert tag == "fxk"
    assert secret not in created.stderr
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).one()
        everything = [str(tuple(r)) for table in Base.metadata.sorted_tables
                      for r in conn.execute(select(table))]
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert (row.role, row.customer_id, row.label, row.revoked_at) == ("customer", customer.id, "laptop", None)
    assert not any(secret in text for text in everything)


# --- limits ----------------------------------------------------------------------------


def test_the_sixth_request_in_a_minute_answers_429_in_the_error_shape_and_other_keys_are_not_affected(
    engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID, other: Other
) -> None:
    # The limiter's window opens at a key's first request, so six quick requests share one.
    app = app_for(engine, api_rate_limit="5 per minute")
    client = app.test_client()
    mine = {"Authorization": customer.headers["Authorization"]}

    statuses = [client.get(f"/api/accounts/{funded_account}", headers=mine).status_code for _ in range(5)]
    limited = client.get(f"/api/accounts/{funded_account}", headers=mine)

    assert statuses == [200] * 5
    assert limited.status_code == 429
    assert limited.mimetype == "application/json"
    assert set(limited.get_json()) == {"error"}
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
    before = snapshot(engine)
    assert client.post("/api/exchanges", headers=mine, json=exchange_body(funded_account)).status_code == 429
    assert snapshot(engine) == before
    assert client.get(f"/api/accounts/{other.account}", headers=other.headers).status_code == 200


def test_a_body_over_max_request_bytes_answers_413_in_the_error_shape_and_writes_nothing(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    padding = "x" * MAX_BODY_BYTES
    before = snapshot(engine)

    response = client.post("/api/exchanges", json={**exchange_body(funded_account), "note": padding})

    assert response.status_code == 413
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == "body_too_large"
    assert str(MAX_BODY_BYTES) in error["message"]
    assert snapshot(engine) == before


def test_a_body_of_exactly_max_request_bytes_is_read_and_judged_on_its_fields(
    client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    body = {**exchange_body(funded_account), "note": ""}
    body["note"] = "x" * (MAX_BODY_BYTES - len(json.dumps(body)))
    data = json.dumps(body)
    assert len(data.encode()) == MAX_BODY_BYTES

    response = client.post("/api/exchanges", data=data, content_type="application/json")

    assert response.status_code == 422
    assert response.get_json()["error"]["fields"]["note"] == ["Unknown field."]
