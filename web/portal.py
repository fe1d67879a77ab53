"""The customers' web portal: sign in, see balances, exchange, watch the exchange finish.

The form runs the same service function as the API, under the same idempotency guarantee:
each render carries a fresh hidden key, so a double submit replays instead of doubling.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from domain import customer_view
from errors import ClientError, ValidationFailed
from services import accounts, exchange_list, exchanges, quotes
from services.credentials import check_password, customer_name
from web import limits
from web.auth import SESSION_CUSTOMER, portal_customer

bp = Blueprint("portal", __name__, template_folder="templates")

#: A rendered form's idempotency key: a UUID.
FORM_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _engine() -> Any:
    return current_app.extensions["fx.engine"]


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if portal_customer() is None:
            return redirect(url_for("portal.login", next=request.path))
        return view(*args, **kwargs)

    return wrapped


def _customer_id() -> uuid.UUID:
    return uuid.UUID(portal_customer())


def is_local_path(target: str) -> bool:
    r"""True for a path on this site; never an open redirect.

    Browsers read a backslash as a slash and drop tabs and newlines, so `/\evil.example`
    and `/<TAB>/evil.example` lead to another host as surely as `//evil.example` does.
    """
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return False
    parts = urlsplit(target)
    return target.startswith("/") and not target.startswith("//") and not parts.scheme and not parts.netloc


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        email = request.form.get("email", "")
        try:
            limits.check_sign_in(email)  # locked out: not even the right password is checked
        except limits.TooManyRequests as locked:
            minutes = math.ceil(locked.retry_after / 60)
            page = render_template("portal/login.html", error=f"Too many failed sign-ins. Try again in {minutes} "
                                                              f"minute{'s' if minutes > 1 else ''}.")
            return page, 429, {"Retry-After": str(locked.retry_after)}
        principal = check_password(_engine(), email, request.form.get("password", ""))
        if principal is not None:
            session.clear()  # a fresh session on sign-in: no fixation
            session[SESSION_CUSTOMER] = str(principal.customer_id)
            target = request.args.get("next", "")
            return redirect(target if is_local_path(target) else url_for("portal.home"))
        limits.sign_in_failed(email)
        error = "Wrong e-mail or password."
    return render_template("portal/login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("portal.login"))


def _home(form: dict[str, str] | None = None, errors: dict[str, list[str]] | None = None, status: int = 200) -> Any:
    customer = _customer_id()
    settings = current_app.extensions["fx.settings"]
    return render_template(
        "portal/home.html",
        name=customer_name(_engine(), customer),
        accounts=accounts.accounts_of(_engine(), customer),
        recent=_recent(customer),
        currencies=settings.currencies,
        form=form or {},
        errors=errors or {},
        form_key=str(uuid.uuid4()),
    ), status


#: Exchanges per page of the home page's list.
RECENT_PAGE = 10


def _recent(customer: Any) -> exchange_list.Page:
    """A page of the customer's exchanges, newest first, paged as the API pages them."""
    try:
        return exchange_list.page_for_customer(_engine(), customer, limit=RECENT_PAGE,
                                               cursor=request.args.get("cursor") or None)
    except ValidationFailed:  # a cursor edited by hand: start from the newest
        return exchange_list.page_for_customer(_engine(), customer, limit=RECENT_PAGE)


@bp.app_template_global("customer_status")
def status_of(row: Any) -> str:
    """The customer's word for where an exchange stands (the list's "status" column)."""
    view = customer_view.of_exchange(row)
    return view.status.value.replace("_", " ")


@bp.get("/")
@signed_in
def home() -> Any:
    return _home()


#: What the home page's form sends; a confirmed quote adds its `quote_id`.
FORM_FIELDS = ("account", "from_currency", "to_currency", "amount")


@bp.post("/quotes")
@signed_in
def submit_quote() -> Any:
    """The home page's form asks for a quote first: the customer sees the rate, then confirms."""
    from web.api import _schemas
    from web.schemas import field_problems

    form = {name: request.form.get(name, "") for name in FORM_FIELDS}
    try:
        data = _schemas().exchange.load(form)
    except ValidationError as error:
        return _home(form, field_problems(error.messages), 422)
    settings = current_app.extensions["fx.settings"]
    try:
        quote = quotes.create_quote(
            _engine(), current_app.extensions["fx.rates"], _customer_id(),
            quotes.QuoteRequest(data["from_currency"], data["to_currency"], data["amount"]),
            ttl=timedelta(seconds=settings.firm_quote_ttl_seconds))
    except ClientError as refusal:
        return _home(form, refusal.fields or {"form": [refusal.message]}, refusal.status)
    return render_template("portal/quote.html", quote=quote, form=form, form_key=str(uuid.uuid4()),
                           firm_seconds=int(settings.firm_quote_ttl_seconds))


@bp.post("/exchanges")
@signed_in
def submit_exchange() -> Any:
    form = {name: request.form.get(name, "") for name in (*FORM_FIELDS, "quote_id") if name in request.form}
    from web.api import _schemas, exchange_request
    from web.schemas import field_problems

    form_key = request.form.get("form_key", "")
    if not FORM_KEY.fullmatch(form_key):
        # Every rendered form carries its own key; without one, a double submit could not be told apart.
        return _home(form, {"form": ["This form is out of date; please submit it again."]}, 400)
    try:
        data = _schemas().exchange.load(form)
    except ValidationError as error:
        return _home(form, field_problems(error.messages), 422)
    try:
        accepted = exchanges.create_exchange(
            _engine(), exchange_request(data, _customer_id()),
            queue=current_app.extensions["fx.settings"].queue_name,
            idempotency_key="form:" + form_key,
            owner=_customer_id(),
            sender=current_app.extensions.get("fx.sender"),
        )
    except ClientError as refusal:
        # A header or a hidden field is not something the customer can correct: said above the form.
        fields = {("form" if name in ("Idempotency-Key", "quote_id") else name): problems
                  for name, problems in (refusal.fields or {"form": [refusal.message]}).items()}
        if "quote_id" in (refusal.fields or {}):
            fields["form"] = [refusal.message]
        return _home(form, fields, refusal.status)
    return redirect(url_for("portal.exchange", exchange_id=accepted.exchange_id), code=303)


@bp.get("/exchanges/<uuid:exchange_id>")
@signed_in
def exchange(exchange_id: uuid.UUID) -> Any:
    row = exchanges.get_exchange(_engine(), exchange_id, owner=_customer_id())
    view = customer_view.of_exchange(row)
    return render_template("portal/exchange.html", exchange=row, view=view, milestones=customer_view.MILESTONES)
