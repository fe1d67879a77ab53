"""Helpers for the web-portal and security tests: signing in, reading forms, seeing what was written."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from models import api_keys, balances, exchange_events, exchanges, ledger_entries, outbox_messages

EMAIL = "test@example.com"
PASSWORD = "test-password"

_HIDDEN = r'<input type="hidden" name="{name}" value="([^"]*)">'


def hidden_field(html: str, name: str) -> str:
    """The value of the page's hidden input `name` (the first, if the page has several forms)."""
    found = re.search(_HIDDEN.format(name=re.escape(name)), html)
    assert found is not None, f"no hidden {name!r} field in the page"
    return found.group(1)


def sign_in(client: FlaskClient, email: str = EMAIL, password: str = PASSWORD, next_url: str | None = None) -> Any:
    """Sign in through the login form, as a browser would: GET the form, POST it with its CSRF token."""
    page = client.get("/login")
    query = {} if next_url is None else {"next": next_url}
    return client.post("/login", query_string=query, data={
        "email": email, "password": password, "csrf_token": hidden_field(page.get_data(as_text=True), "csrf_token"),
    })


def exchange_form(client: FlaskClient, **fields: str) -> dict[str, str]:
    """The home page's exchange form as the browser would send it, with `fields` filled in."""
    html = client.get("/").get_data(as_text=True)
    return {"csrf_token": hidden_field(html, "csrf_token"), "form_key": hidden_field(html, "form_key"), **fields}


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything a request could write: row counts, every balance and every key."""
    with engine.connect() as conn:
        state: dict[str, Any] = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (exchanges, outbox_messages, exchange_events, ledger_entries)
        }
        state["balances"] = [tuple(row) for row in conn.execute(
            select(balances.c.account_id, balances.c.currency, balances.c.available, balances.c.held)
            .order_by(balances.c.account_id, balances.c.currency))]
        state["api_keys"] = [tuple(row) for row in conn.execute(
            select(api_keys.c.prefix, api_keys.c.revoked_at).order_by(api_keys.c.prefix))]
    return state


def assert_unauthorized(response: Any, realm: str = "Bearer") -> None:
    """401 in the API's one error shape, saying how to authenticate."""
    assert response.status_code == 401, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    assert response.headers["WWW-Authenticate"] == f'{realm} realm="fx"'
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized"
    assert isinstance(error["message"], str) and error["message"]
