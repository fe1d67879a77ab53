"""The JSON API: thin views over the service functions."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from domain import customer_view
from domain.currencies import minor_unit
from domain.money import money_text, rate_text
from errors import MalformedRequest
from infra.observability import current_trace_headers
from services import accounts, exchange_list, exchanges, quotes, timeline
from settings import Settings
from web.auth import customer_required
from web.schemas import QUOTED_FIELDS, ExchangeRequestSchema, ListQuerySchema, QuoteRequestSchema, validated

bp = Blueprint("api", __name__, url_prefix="/api")

#: Keys are printable ASCII without spaces, at most this long.
IDEMPOTENCY_KEY_MAX_CHARS = 255


def _settings() -> Settings:
    return current_app.extensions["fx.settings"]


def _engine() -> Any:
    return current_app.extensions["fx.engine"]


@dataclass(frozen=True)
class _Schemas:
    exchange: ExchangeRequestSchema
    listing: ListQuerySchema
    quote: QuoteRequestSchema


def _schemas() -> _Schemas:
    """The request schemas, built once per app (their rules come from its settings)."""
    schemas = current_app.extensions.get("fx.api_schemas")
    if schemas is None:
        settings = _settings()
        rules = {"currencies": settings.currencies, "max_amount": settings.max_exchange_amount}
        schemas = _Schemas(ExchangeRequestSchema(**rules), ListQuerySchema(), QuoteRequestSchema(**rules))
        current_app.extensions["fx.api_schemas"] = schemas
    return schemas


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx that says what is wrong with it."""
    if not request.is_json:
        raise MalformedRequest(
            "The request body must be JSON.",
            fields={"Content-Type": ["Must be application/json."]},
        )
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        problem = f"Not valid JSON: {error}"[:200]
        raise MalformedRequest("The request body is not valid JSON.", fields={"body": [problem]}) from None
    if not isinstance(body, dict):
        raise MalformedRequest("The request body must be a JSON object.", fields={"body": ["Must be a JSON object."]})
    return body


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_CHARS or not all(33 <= ord(c) <= 126 for c in key):
        problem = f"Must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters, no spaces."
        raise MalformedRequest("Bad Idempotency-Key header.", fields={"Idempotency-Key": [problem]})
    return key


@bp.post("/exchanges")
@customer_required
def create_exchange() -> tuple[Response, int]:
    key = idempotency_key()
    body = json_body()
    data = validated(_schemas().exchange, body)
    accepted = exchanges.create_exchange(
        _engine(),
        exchange_request(data, g.principal.customer_id),
        queue=_settings().queue_name,
        idempotency_key=key,
        trace_headers=current_trace_headers(),
        owner=g.principal.customer_id,
        sender=current_app.extensions.get("fx.sender"),
    )
    status_url = url_for("api.get_exchange", exchange_id=accepted.exchange_id)
    response = jsonify(
        id=str(accepted.exchange_id),
        account=str(accepted.account_id),
        from_currency=accepted.from_currency,
        to_currency=accepted.to_currency,
        amount=money_text(accepted.amount, accepted.from_currency),
        accepted_at=accepted.accepted_at.isoformat(),
        status_url=status_url,
    )
    response.headers["Location"] = status_url
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 202


def exchange_request(data: dict[str, Any], customer_id: uuid.UUID) -> exchanges.ExchangeRequest:
    """The validated body as a request; the fields left out of a quoted one come from its quote
    (which the accept transaction then takes, checking every field again)."""
    quote_id = data.get("quote_id")
    if quote_id is not None and any(name not in data for name in QUOTED_FIELDS):
        quote = quotes.get_quote(_engine(), quote_id, customer_id)
        data = {**{name: getattr(quote, name) for name in QUOTED_FIELDS}, **data}
    return exchanges.ExchangeRequest(data["account"], data["from_currency"], data["to_currency"], data["amount"],
                                     quote_id=quote_id)


@bp.post("/quotes")
@customer_required
def create_quote() -> tuple[Response, int]:
    """A firm rate for a pair and amount, for an exchange that names it before it expires."""
    body = json_body()
    data = validated(_schemas().quote, body)
    row = quotes.create_quote(
        _engine(), current_app.extensions["fx.rates"], g.principal.customer_id,
        quotes.QuoteRequest(data["from_currency"], data["to_currency"], data["amount"]),
        ttl=timedelta(seconds=_settings().firm_quote_ttl_seconds))
    response = jsonify(quote_json(row))
    response.headers["Location"] = url_for("api.get_quote", quote_id=row.id)
    return response, 201


@bp.get("/quotes/<uuid:quote_id>")
@customer_required
def get_quote(quote_id: uuid.UUID) -> Response:
    return jsonify(quote_json(quotes.get_quote(_engine(), quote_id, g.principal.customer_id)))


def quote_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "from_currency": row.from_currency,
        "to_currency": row.to_currency,
        "amount": money_text(row.amount, row.from_currency),
        "rate": rate_text(row.rate),
        "to_amount": money_text(row.to_amount, row.to_currency),
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "status": quotes.status_of(row),
        "exchange": None if row.exchange_id is None else str(row.exchange_id),
    }


@bp.get("/exchanges")
@customer_required
def list_exchanges() -> Response:
    """The customer's exchanges, newest first, a page at a time."""
    query = validated(_schemas().listing, request.args, what="query")
    page = exchange_list.page_for_customer(
        _engine(), g.principal.customer_id, limit=query["limit"], cursor=query.get("cursor"),
        states=query.get("state", ()), created_after=query.get("created_after"),
        created_before=query.get("created_before"))
    return jsonify(data=[exchange_json(row) for row in page.rows], next_cursor=page.next_cursor)


@bp.get("/exchanges/<uuid:exchange_id>")
@customer_required
def get_exchange(exchange_id: uuid.UUID) -> Response:
    return jsonify(exchange_json(exchanges.get_exchange(_engine(), exchange_id, owner=g.principal.customer_id)))


def exchange_json(row: Any) -> dict[str, Any]:
    """One exchange as its customer sees it: where it stands in plain words, never internal errors."""
    return {
        **_standing(row),
        "account": str(row.account_id),
        "from_currency": row.from_currency,
        "to_currency": row.to_currency,
        "amount": money_text(row.amount, row.from_currency),
        "rate": rate_text(row.rate),
        "quote": None if row.quote_id is None else str(row.quote_id),
        "to_amount": money_text(row.to_amount, row.to_currency),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _standing(row: Any) -> dict[str, Any]:
    """Where an exchange stands: the fields its answer and its timeline both start with."""
    view = customer_view.of_exchange(row)
    return {"id": str(row.id), "state": row.state, "step": row.step, "attempt": row.attempt,
            "status": view.status.value, "status_message": view.message, "failure_reason": view.failure_reason,
            "final": view.final}


@bp.get("/exchanges/<uuid:exchange_id>/timeline")
@customer_required
def get_timeline(exchange_id: uuid.UUID) -> Response:
    """What happened to the customer's money, step by step, in plain words (operators have the full
    timeline at /api/ops/exchanges/<id>/timeline)."""
    row = exchanges.get_exchange(_engine(), exchange_id, owner=g.principal.customer_id)
    events = customer_view.customer_events(
        timeline.of_exchange(_engine(), exchange_id), failure_code=row.failure_code,
        amount=money_text(row.amount, row.from_currency) or "", from_currency=row.from_currency,
        to_amount=money_text(row.to_amount, row.to_currency), to_currency=row.to_currency)
    return jsonify(**_standing(row), events=[event.as_json() for event in events])


@bp.get("/accounts/<uuid:account_id>")
@customer_required
def get_account(account_id: uuid.UUID) -> Response:
    view = accounts.get_account(_engine(), account_id, customer_id=g.principal.customer_id)
    return jsonify(
        id=str(view.id),
        owner=view.owner,
        status=view.status,
        balances=[
            {"currency": b.currency, "available": money_text(b.available, b.currency),
             "held": money_text(b.held, b.currency), "minor_unit": minor_unit(b.currency)}
            for b in view.balances
        ],
    )
