"""The customers' web portal, through its HTML: sign in, balances, the exchange form, the progress page.

Run with Flask's test client on PostgreSQL and SQLite; the same pages in a real browser,
with the whole pipeline moving the exchange, are in test_portal_browser.py.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from models import exchanges, quotes
from ops.actions import cancel
from services.accounts import open_account
from tests.support.portal import EMAIL, PASSWORD, exchange_form, hidden_field, sign_in, snapshot


def submit(client: FlaskClient, account: uuid.UUID, amount: str, source: str = "CAD", target: str = "USD") -> object:
    form = exchange_form(client, account=str(account), from_currency=source, to_currency=target, amount=amount)
    return client.post("/exchanges", data=form)


def field_error(html: str, name: str) -> str | None:
    """The error paragraph that follows the field `name`'s own input or select, if any."""
    found = re.search(
        rf'<(?:input|select) id="{name}"[^>]*>(?:(?!<label).)*?<p class="error" id="{name}-error">([^<]*)</p>',
        html, re.DOTALL)
    return None if found is None else found.group(1)


def balance_row(currency: str, available: str, held: str) -> str:
    return f'<tr><td>{currency}</td><td class="num">{available}</td><td class="num">{held}</td></tr>'


@pytest.fixture
def signed_in(anonymous_client: FlaskClient, funded_account: uuid.UUID) -> FlaskClient:
    """The test customer, signed in to the portal, with a funded account (CAD 1000.00, USD 50.00)."""
    assert sign_in(anonymous_client).status_code == 302
    return anonymous_client


# --- signing in and out ------------------------------------------------------------------


@pytest.mark.parametrize(("email", "password"), [(EMAIL, PASSWORD + "x"), (EMAIL, ""), ("nobody@example.com", PASSWORD),
                                                 ("test@example.com\x00", PASSWORD)],
                         ids=["wrong-password", "empty-password", "unknown-email", "email-with-nul"])
def test_a_wrong_password_answers_401_with_the_message_and_signs_nobody_in(
    anonymous_client: FlaskClient, funded_account: uuid.UUID, email: str, password: str
) -> None:
    response = sign_in(anonymous_client, email=email, password=password)

    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert '<p class="error" role="alert">Wrong e-mail or password.</p>' in html
    assert PASSWORD not in html
    assert anonymous_client.get("/").status_code == 302


def test_the_right_password_redirects_home_whatever_the_case_of_the_email(
    anonymous_client: FlaskClient, funded_account: uuid.UUID
) -> None:
    response = sign_in(anonymous_client, email=EMAIL.upper())

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert anonymous_client.get("/").status_code == 200


def test_signing_in_starts_a_fresh_session(anonymous_client: FlaskClient, funded_account: uuid.UUID) -> None:
    before = hidden_field(anonymous_client.get("/login").get_data(as_text=True), "csrf_token")
    sign_in(anonymous_client)
    after = hidden_field(anonymous_client.get("/").get_data(as_text=True), "csrf_token")
    assert after != before  # the pre-sign-in session (and its token) is gone: no fixation


def test_the_login_form_without_its_csrf_token_is_refused(
    anonymous_client: FlaskClient, funded_account: uuid.UUID
) -> None:
    anonymous_client.get("/login")
    response = anonymous_client.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert anonymous_client.get("/").status_code == 302


def test_signing_out_requires_the_csrf_token(signed_in: FlaskClient) -> None:
    refused = signed_in.post("/logout")
    assert refused.status_code == 400
    assert signed_in.get("/").status_code == 200  # still signed in

    token = hidden_field(signed_in.get("/").get_data(as_text=True), "csrf_token")
    response = signed_in.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert signed_in.get("/").status_code == 302


@pytest.mark.parametrize("path", ["/", "/exchanges/00000000-0000-4000-8000-000000000000"])
def test_pages_redirect_to_the_login_with_the_page_to_come_back_to(anonymous_client: FlaskClient, path: str) -> None:
    response = anonymous_client.get(path)

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": [path]}


def test_the_exchange_form_is_refused_without_a_session_and_writes_nothing(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    before = snapshot(engine)
    token = hidden_field(anonymous_client.get("/login").get_data(as_text=True), "csrf_token")  # a form's, unsigned-in
    response = anonymous_client.post("/exchanges", data={"account": str(funded_account), "from_currency": "CAD",
                                                         "to_currency": "USD", "amount": "10.00",
                                                         "csrf_token": token})
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert snapshot(engine) == before


def test_signing_in_goes_back_to_the_page_that_asked_for_it(
    anonymous_client: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    page = f"/exchanges/{uuid.uuid4()}"
    response = sign_in(anonymous_client, next_url=page)
    assert response.status_code == 302
    assert response.headers["Location"] == page


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/login", "https://evil.example/",
                                    "/\\evil.example", "/\\/evil.example", "/\t/evil.example", "/\n/evil.example",
                                    "javascript:alert(1)", "evil.example"])
def test_signing_in_never_redirects_to_another_site(
    anonymous_client: FlaskClient, funded_account: uuid.UUID, target: str
) -> None:
    response = sign_in(anonymous_client, next_url=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- balances and the exchange form -------------------------------------------------------


def test_home_shows_each_balance_in_its_currencys_minor_unit(
    signed_in: FlaskClient, engine: Engine, customer: object
) -> None:
    html = signed_in.get("/").get_data(as_text=True)

    assert "Hello, Test Customer" in html
    assert balance_row("CAD", "1000.00", "0.00") in html
    assert balance_row("USD", "50.00", "0.00") in html
    assert "E+" not in html  # never "1E+3"
    assert "None yet." in html


def test_home_lists_only_the_signed_in_customers_accounts(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    stranger = open_account(engine, "Someone Else", {"JPY": Decimal("500000")})
    html = signed_in.get("/").get_data(as_text=True)
    assert str(funded_account) in html
    assert str(stranger) not in html


@pytest.mark.parametrize(
    ("amount", "source", "target", "field", "message"),
    [
        ("10.001", "CAD", "USD", "amount", "CAD allows at most 2 decimal places."),
        ("1.5", "JPY", "USD", "amount", "JPY allows at most 0 decimal places."),
        ("0", "CAD", "USD", "amount", "Must be greater than zero."),
        ("-5", "CAD", "USD", "amount", "Must be a plain decimal string such as &#34;125.50&#34;."),
        ("1e3", "CAD", "USD", "amount", "Must be a plain decimal string such as &#34;125.50&#34;."),
        ("10.00", "CAD", "CAD", "to_currency", "Must differ from from_currency."),
        ("10.00", "XXX", "USD", "from_currency", "&#39;XXX&#39; is not an ISO 4217 currency code"),
    ],
    ids=["too-many-decimals", "jpy-decimals", "zero", "negative", "exponent", "same-currency", "unknown-currency"],
)
def test_an_invalid_field_is_explained_beside_it_with_422_and_nothing_is_written(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID, amount: str, source: str, target: str,
    field: str, message: str,
) -> None:
    before = snapshot(engine)

    response = submit(signed_in, funded_account, amount, source, target)

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    error = field_error(html, field)
    assert error is not None and error.startswith(message), html
    assert re.search(rf'<(?:input|select) id="{field}"[^>]*class="invalid"', html)
    assert f'value="{amount}"' in html  # what the customer typed is kept
    assert snapshot(engine) == before


def test_more_than_the_available_balance_is_explained_beside_the_amount_with_409(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    before = snapshot(engine)

    response = submit(signed_in, funded_account, "1000.01")

    assert response.status_code == 409
    assert field_error(response.get_data(as_text=True), "amount") == "Exceeds the available CAD balance."
    assert snapshot(engine) == before


def test_a_valid_exchange_redirects_with_303_to_its_page_which_shows_its_progress(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    response = submit(signed_in, funded_account, "125.50")

    assert response.status_code == 303
    with engine.connect() as conn:
        row = conn.execute(select(exchanges).where(exchanges.c.account_id == funded_account)).one()
    assert response.headers["Location"] == f"/exchanges/{row.id}"
    assert (row.amount, row.from_currency, row.to_currency, row.state) == (Decimal("125.50"), "CAD", "USD", "pending")
    page = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "<h1>125.50 CAD → … USD</h1>" in page
    assert '<b class="state-pending" id="state">processing</b>' in page
    assert "Received: we are fixing the rate and holding your CAD." in page
    assert '<meta http-equiv="refresh" content="1">' in page  # refreshes until done
    assert '<span class="now">accepted</span>' in page
    home = signed_in.get("/").get_data(as_text=True)
    assert balance_row("CAD", "874.50", "125.50") in home
    assert f'href="/exchanges/{row.id}">125.50 CAD → … USD</a>' in home


def test_a_finished_exchanges_page_stops_refreshing_and_says_how_it_ended(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    location = submit(signed_in, funded_account, "20.00").headers["Location"]
    cancel(engine, uuid.UUID(location.rsplit("/", 1)[1]), "alice", queue="exchanges")

    page = signed_in.get(location).get_data(as_text=True)

    assert '<b class="state-failed" id="state">failed</b>' in page
    assert "Not done: no money moved; your CAD stays available." in page
    assert "Why: Our support team cancelled the exchange." in page
    assert '<span class="ended" id="ended">failed</span>' in page
    assert "http-equiv=\"refresh\"" not in page


def test_an_exchange_page_of_an_unknown_id_answers_404(signed_in: FlaskClient) -> None:
    assert signed_in.get(f"/exchanges/{uuid.uuid4()}").status_code == 404


def test_a_form_without_its_rendered_key_is_refused_and_writes_nothing(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    form = exchange_form(signed_in, account=str(funded_account), from_currency="CAD", to_currency="USD",
                         amount="10.00")
    del form["form_key"]
    before = snapshot(engine)

    response = signed_in.post("/exchanges", data=form)

    assert response.status_code == 400
    assert "out of date" in response.get_data(as_text=True)
    assert snapshot(engine) == before


def test_the_exchange_list_pages_ten_at_a_time_newest_first_in_the_customers_words(
    signed_in: FlaskClient, funded_account: uuid.UUID
) -> None:
    locations = [submit(signed_in, funded_account, f"{n}.00").headers["Location"] for n in range(1, 13)]

    first = signed_in.get("/").get_data(as_text=True)
    assert first.count('<td class="state-pending">processing</td>') == 10
    assert first.index(f'href="{locations[-1]}"') < first.index(f'href="{locations[-2]}"')  # newest first
    assert f'href="{locations[0]}"' not in first
    older = re.search(r'<a id="older" href="([^"]+)"', first)
    assert older is not None

    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert [loc for loc in locations if f'href="{loc}"' in second] == locations[:2]
    assert 'id="older"' not in second and 'id="newest"' in second
    # A cursor edited by hand shows the newest page, not an error.
    assert signed_in.get("/?cursor=garbage").status_code == 200


# --- a quote first, then the exchange ------------------------------------------------------


def ask_quote(client: FlaskClient, account: uuid.UUID, amount: str) -> tuple[object, str]:
    form = exchange_form(client, account=str(account), from_currency="CAD", to_currency="USD", amount=amount)
    response = client.post("/quotes", data=form)
    return response, response.get_data(as_text=True)  # type: ignore[attr-defined]


def test_the_form_shows_a_firm_quote_first_and_confirming_it_makes_the_exchange_at_that_rate(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    home = signed_in.get("/").get_data(as_text=True)
    assert 'action="/quotes"' in home and ">See the rate</button>" in home
    response, page = ask_quote(signed_in, funded_account, "125.50")
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert '<td class="num" id="quote-pay">125.50 CAD</td>' in page
    assert '<td class="num" id="quote-get">91.74 USD</td>' in page
    assert "guaranteed for 2 minutes" in page
    assert snapshot(engine)["exchanges"] == 0  # nothing is held before the customer confirms
    confirm = {name: hidden_field(page, name) for name in ("csrf_token", "form_key", "quote_id", "account",
                                                           "from_currency", "to_currency", "amount")}

    done = signed_in.post("/exchanges", data=confirm)

    assert done.status_code == 303
    with engine.connect() as conn:
        row = conn.execute(select(exchanges).where(exchanges.c.account_id == funded_account)).one()
    assert (str(row.quote_id), row.to_amount) == (confirm["quote_id"], Decimal("91.74"))
    shown = signed_in.get(done.headers["Location"]).get_data(as_text=True)
    assert "<h1>125.50 CAD → 91.74 USD</h1>" in shown and 'id="quoted">(as quoted)' in shown
    assert signed_in.post("/exchanges", data=confirm).headers["Location"] == done.headers["Location"]  # replay


def test_confirming_an_expired_quote_says_so_above_the_form_and_holds_nothing(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    from tests.test_quotes import expire

    _, page = ask_quote(signed_in, funded_account, "10.00")
    confirm = {name: hidden_field(page, name) for name in ("csrf_token", "form_key", "quote_id", "account",
                                                           "from_currency", "to_currency", "amount")}
    expire(engine, confirm["quote_id"])
    before = snapshot(engine)

    response = signed_in.post("/exchanges", data=confirm)

    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert '<p class="error" id="form-error">This quote has expired; ask for a new one.</p>' in html
    assert 'value="10.00"' in html  # the form is filled in again, ready for a new quote
    assert snapshot(engine) == before


def test_a_bad_amount_is_named_on_the_form_before_any_quote_is_made(
    signed_in: FlaskClient, engine: Engine, funded_account: uuid.UUID
) -> None:
    response, html = ask_quote(signed_in, funded_account, "1.001")
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert field_error(html, "amount") == "CAD allows at most 2 decimal places."
    with engine.connect() as conn:
        assert conn.execute(select(quotes.c.id)).first() is None
