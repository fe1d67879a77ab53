"""The front door: budgets on the verified identity, unknown keys refused before they cost a lookup,
sign-in locked out after repeated failures (portal and operators alike), and `Retry-After` only
where it means something (a 429)."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import pytest
from conftest import ApiCustomer, settings_for
from flask import Flask
from sqlalchemy import Engine, event

from app import create_app
from tests.support.portal import EMAIL, PASSWORD, hidden_field, sign_in


def app_for(engine: Engine, **overrides: Any) -> Flask:
    app = create_app(settings_for(engine, **overrides))
    app.extensions["fx.engine"].dispose()
    app.extensions["fx.engine"] = engine
    return app


def unknown_key() -> str:
    return f"fxk_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"


def test_sixty_unknown_keys_from_one_address_are_refused_429_past_the_small_budget_without_a_lookup(
    engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    client = app_for(engine, unverified_rate_limit="20 per minute").test_client()
    lookups: list[str] = []

    def looked_up(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "api_keys" in statement:
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", looked_up)
    try:
        answers = [client.get(f"/api/accounts/{funded_account}", headers={"Authorization": f"Bearer {unknown_key()}"})
                   for _ in range(60)]
    finally:
        event.remove(engine, "before_cursor_execute", looked_up)
    assert [a.status_code for a in answers] == [401] * 20 + [429] * 40
    assert len(lookups) == 20  # one key lookup per refused key within the budget, none after it
    limited = answers[-1]
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
    # Another address is not affected, and a valid key from it spends its own budget.
    elsewhere = client.get(f"/api/accounts/{funded_account}", headers=customer.headers,
                           environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert elsewhere.status_code == 200


def test_a_verified_key_has_its_own_budget_whatever_prefix_an_unknown_key_claims(
    engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    client = app_for(engine, api_rate_limit="5 per minute", unverified_rate_limit="100 per minute").test_client()
    prefix = customer.api_key.split("_")[1]
    # Keys that claim the customer's prefix but are wrong spend nothing of the customer's budget.
    for _ in range(10):
        forged = f"fxk_{prefix}_{secrets.token_urlsafe(24)}"
        assert client.get(f"/api/accounts/{funded_account}", headers={"Authorization": f"Bearer {forged}"}
                          ).status_code == 401
    statuses = [client.get(f"/api/accounts/{funded_account}", headers=customer.headers).status_code
                for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_no_answer_but_a_429_carries_retry_after(
    engine: Engine, customer: ApiCustomer, funded_account: uuid.UUID
) -> None:
    client = app_for(engine).test_client()
    answers = [
        client.get(f"/api/accounts/{funded_account}", headers=customer.headers),
        client.post("/api/exchanges", headers=customer.headers, json={
            "account": str(funded_account), "from_currency": "CAD", "to_currency": "USD", "amount": "1.00"}),
        client.get(f"/api/exchanges/{uuid.uuid4()}", headers=customer.headers),
        client.get("/api/exchanges"),
        client.get("/api/health"),
        client.get("/login"),
    ]
    assert [a.status_code for a in answers] == [200, 202, 404, 401, 200, 200]
    assert not [a.status_code for a in answers if "Retry-After" in a.headers]


@pytest.fixture
def portal(engine: Engine, customer: ApiCustomer) -> Flask:
    return app_for(engine, login_limit_per_account="5 per 15 minutes", login_limit_per_address="50 per 15 minutes")


def test_twenty_wrong_passwords_lock_the_login_and_the_right_one_is_refused_until_the_window_ends(
    portal: Flask
) -> None:
    client = portal.test_client()
    statuses = [sign_in(client, password=f"wrong-{n}").status_code for n in range(20)]
    assert statuses == [401] * 5 + [429] * 15
    locked = sign_in(client)  # the right password
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in locked.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still signed out
    # The lock is on that account (and on addresses that fail too often), not on everyone.
    other = portal.test_client()
    assert sign_in(other, email="nobody@example.com", password=PASSWORD).status_code == 401


def test_failures_from_one_address_across_many_accounts_lock_that_address(engine: Engine,
                                                                          customer: ApiCustomer) -> None:
    client = app_for(engine, login_limit_per_address="10 per 15 minutes").test_client()
    statuses = [sign_in(client, email=f"guess-{n}@example.com").status_code for n in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    assert sign_in(client, email=EMAIL).status_code == 429


def test_the_operators_basic_auth_is_throttled_like_the_portal_sign_in(engine: Engine) -> None:
    client = app_for(engine, operators="alice:right-password").test_client()

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()}

    assert client.get("/ops/", headers=basic("right-password")).status_code == 200
    statuses = [client.get("/ops/", headers=basic(f"wrong-{n}")).status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    locked = client.get("/ops/", headers=basic("right-password"))
    assert locked.status_code == 429 and "Retry-After" in locked.headers


def test_every_page_and_answer_carries_the_security_headers(engine: Engine, customer: ApiCustomer) -> None:
    client = app_for(engine).test_client()
    for path in ("/login", "/api/health", "/ops/", "/api/docs", "/api/exchanges"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    assert "script-src" not in client.get("/login").headers["Content-Security-Policy"]  # no script at all
    assert "Strict-Transport-Security" not in client.get("/login").headers  # development: plain HTTP


@pytest.mark.parametrize(("environment", "secure"), [("development", False), ("production", True)])
def test_the_session_cookie_is_httponly_samesite_lax_and_secure_outside_development(
    engine: Engine, customer: ApiCustomer, environment: str, secure: bool
) -> None:
    extra = {"secret_key": "s" * 40} if environment == "production" else {}
    app = app_for(engine, environment=environment, **extra)
    response = app.test_client().get("/login")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ("Secure" in cookie) is secure
    assert ("Strict-Transport-Security" in response.headers) is secure


def test_a_form_token_older_than_its_time_limit_is_refused(
    engine: Engine, customer: ApiCustomer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itsdangerous.timed

    client = app_for(engine, csrf_time_limit_seconds=60).test_client()
    token = hidden_field(client.get("/login").get_data(as_text=True), "csrf_token")
    issued = itsdangerous.timed.time.time()
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: issued + 61)  # a minute and a second later

    response = client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "csrf_failed" and "expired" in error["fields"]["csrf_token"][0]
    monkeypatch.undo()
    fresh = hidden_field(client.get("/login").get_data(as_text=True), "csrf_token")
    assert client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": fresh}).status_code == 302
