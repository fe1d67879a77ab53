"""The API's OpenAPI 3 document, generated from the marshmallow schemas, and its docs page."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, jsonify, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from domain.money import AMOUNT_PATTERN
from domain.states import ExchangeState
from settings import Settings
from web.api import IDEMPOTENCY_KEY_MAX_CHARS
from web.openapi_webhooks import TAG, add_webhooks
from web.schemas import (
    AccountSchema,
    AmountField,
    CurrencyField,
    ErrorSchema,
    ExchangeAcceptedSchema,
    ExchangePageSchema,
    ExchangeRequestSchema,
    ExchangeSchema,
    QuoteRequestSchema,
    QuoteSchema,
    TimelineSchema,
)

bp = Blueprint("openapi", __name__, url_prefix="/api", template_folder="templates")

ERRORS = {
    "400": "Malformed request: not JSON, not an object, wrong Content-Type or a bad Idempotency-Key.",
    "401": "Missing, unknown or revoked API key.",
    "404": "No such account, exchange, quote, webhook endpoint or delivery (or not yours).",
    "409": "Insufficient funds, the account is not active, or the quote expired (`quote_expired`) or was "
           "used by another exchange (`quote_used`).",
    "413": "The body is larger than the limit.",
    "422": "A field is invalid (named in `error.fields`), the Idempotency-Key was used with another body, or "
           "there is no rate for the pair now (`no_rate`).",
    "429": "Too many requests for this API key; retry later.",
    "503": "The database could not be reached (`database_unavailable`); retry after `Retry-After` seconds, "
           "with the same Idempotency-Key.",
}


#: Headers an error answer always carries, besides its `Error` body.
ERROR_HEADERS = {
    "401": {"WWW-Authenticate": {"description": "How to authenticate: `Bearer realm=\"fx\"`.", "required": True,
                                 "schema": {"type": "string"}}},
    "429": {"Retry-After": {"description": "Seconds until the limit resets.", "required": True,
                            "schema": {"type": "integer", "minimum": 0}}},
    "503": {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                            "schema": {"type": "integer", "minimum": 0}}},
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": ERRORS[code], "content": {"application/json": {"schema": "Error"}},
                   **({"headers": ERROR_HEADERS[code]} if code in ERROR_HEADERS else {})}
            for code in codes}


def build_spec(settings: Settings) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="fx-outbox exchange API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Currency exchanges that never leave money half-moved. Amounts are decimal "
                             "strings, never JSON numbers. Every error has the `Error` shape."},
        tags=[{"name": "Exchanges", "description": "Move money between two currencies of one account, and "
                                                   "follow it to the end."},
              {"name": "Quotes", "description": "See the rate before committing: a quote is firm until it "
                                                "expires, for one exchange."},
              {"name": "Accounts", "description": "Balances: available, and held by exchanges in flight."},
              TAG,
              {"name": "Health", "description": "For load balancers and orchestrators: no API key needed."}],
    )
    plugin.map_to_openapi_type(AmountField, "string", None)
    plugin.map_to_openapi_type(CurrencyField, "string", None)
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer",
                                               "description": "`Authorization: Bearer fxk_...`"})
    rules = {"currencies": settings.currencies, "max_amount": settings.max_exchange_amount}
    requests = {"ExchangeRequest": ExchangeRequestSchema(**rules), "QuoteRequest": QuoteRequestSchema(**rules)}
    for name, schema in requests.items():
        spec.components.schema(name, schema=schema)
    properties = {name: _request_properties(spec, name, settings) for name in requests}
    spec.components.schema("ExchangeAccepted", schema=ExchangeAcceptedSchema)
    spec.components.schema("Exchange", schema=ExchangeSchema)
    spec.components.schema("Timeline", schema=TimelineSchema)
    spec.components.schema("ExchangePage", schema=ExchangePageSchema)
    spec.components.schema("Account", schema=AccountSchema)
    spec.components.schema("Quote", schema=QuoteSchema)
    spec.components.schema("Error", schema=ErrorSchema)
    _paths(spec)
    document = spec.to_dict()
    for name, changed in properties.items():
        document["components"]["schemas"][name]["properties"] = changed
    fill_examples(document)
    return document


#: Examples by field name, for the fields whose schema gives none (a uuid, a time and an enum get
#: theirs from their format or their first value).
EXAMPLES: dict[str, object] = {
    "amount": "125.50", "to_amount": "91.38", "available": "874.50", "held": "125.50", "rate": "0.731",
    "currency": "CAD", "from_currency": "CAD", "to_currency": "USD", "minor_unit": 2, "owner": "Ada Lovelace",
    "code": "insufficient_funds", "message": "Insufficient CAD funds.", "attempt": 1, "attempts_made": 2,
    "latency_ms": 87, "status_code": 204, "response": "", "description": "order service", "step": "credit",
    "status_url": "/api/exchanges/8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "final": False,
    "failure_reason": "Our bank could not complete the transfer; your money was returned.",
    "next_cursor": "MjAyNi0xMi0wMVQxNDowMjozMS4xMjM0NTYrMDA6MDB8OGMxZA",
    "fields": {"amount": ["CAD allows at most 2 decimal places."]},
}
_FORMAT_EXAMPLES = {"uuid": "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "date-time": "2026-12-01T14:02:31.123456+00:00"}


def fill_examples(document: dict[str, Any]) -> None:
    """An example on every scalar field of every schema (nested objects show their own)."""
    for schema in document["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            if "example" in prop or "$ref" in prop or (prop.get("type") == "array" and "$ref" in prop.get("items", {})):
                continue
            if prop.get("enum"):
                prop["example"] = prop["enum"][0]
            elif prop.get("format") in _FORMAT_EXAMPLES:
                prop["example"] = _FORMAT_EXAMPLES[prop["format"]]
            elif name in EXAMPLES:
                prop["example"] = EXAMPLES[name]


def _request_properties(spec: APISpec, name: str, settings: Settings) -> dict[str, Any]:
    """A request schema's properties with what marshmallow cannot say: the amount's pattern and
    bounds, the traded currencies."""
    properties = spec.to_dict()["components"]["schemas"][name]["properties"]
    properties["amount"].update(type="string", pattern=AMOUNT_PATTERN.pattern, example="125.50",
                                description=f"Positive, at most {settings.max_exchange_amount}, no more decimals "
                                            "than the source currency's ISO 4217 minor unit."
                                            + (" Required unless `quote_id` is given." if "quote_id" in properties
                                               else ""))
    for currency, example in (("from_currency", "CAD"), ("to_currency", "USD")):
        properties[currency].update(type="string", enum=list(settings.currencies), example=example,
                                    description="ISO 4217 code" + (
                                        "; required unless `quote_id` is given." if "quote_id" in properties else "."))
    if "account" in properties:
        properties["account"].update(description="One of the customer's accounts (`GET /api/accounts/{id}`).",
                                     example="6d1f0a52-3c4b-4e8f-a1b2-c3d4e5f6a7b8")
    return properties


def _paths(spec: APISpec) -> None:
    secured = [{"apiKey": []}]
    uuid_param = {"in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    spec.path(path="/api/exchanges", operations={"get": {
        "operationId": "listExchanges", "tags": ["Exchanges"], "security": secured,
        "summary": "The customer's exchanges, newest first, a page at a time",
        "parameters": [
            {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100,
                                                        "default": 20}, "description": "Exchanges per page."},
            {"in": "query", "name": "cursor", "schema": {"type": "string", "minLength": 1, "maxLength": 200},
             "description": "`next_cursor` of the previous page."},
            {"in": "query", "name": "state", "style": "form", "explode": True,
             "schema": {"type": "array", "items": {"type": "string", "enum": [s.value for s in ExchangeState]}},
             "description": "Only these states; repeat for several."},
            {"in": "query", "name": "created_after", "schema": {"type": "string", "format": "date-time"},
             "description": "Created at or after this instant (ISO 8601)."},
            {"in": "query", "name": "created_before", "schema": {"type": "string", "format": "date-time"},
             "description": "Created before this instant (ISO 8601)."},
        ],
        "responses": {"200": {"description": "One page", "content": {"application/json": {"schema": "ExchangePage"}}},
                      **_errors("401", "422", "429", "503")},
    }, "post": _create_exchange_operation(secured)})
    spec.path(path="/api/exchanges/{exchange_id}", operations={"get": {
        "operationId": "getExchange", "tags": ["Exchanges"], "summary": "An exchange's state", "security": secured,
        "parameters": [{"name": "exchange_id", **uuid_param}],
        "responses": {"200": {"description": "The exchange", "content": {"application/json": {"schema": "Exchange"}}},
                      **_errors("401", "404", "429", "503")},
    }})
    spec.path(path="/api/exchanges/{exchange_id}/timeline", operations={"get": {
        "operationId": "getExchangeTimeline", "tags": ["Exchanges"],
        "summary": "What happened to the money, step by step, in plain words", "security": secured,
        "parameters": [{"name": "exchange_id", **uuid_param}],
        "responses": {"200": {"description": "The timeline", "content": {"application/json": {"schema": "Timeline"}}},
                      **_errors("401", "404", "429", "503")},
    }})
    spec.path(path="/api/accounts/{account_id}", operations={"get": {
        "operationId": "getAccount", "tags": ["Accounts"], "summary": "An account's balances", "security": secured,
        "parameters": [{"name": "account_id", **uuid_param}],
        "responses": {"200": {"description": "The account", "content": {"application/json": {"schema": "Account"}}},
                      **_errors("401", "404", "429", "503")},
    }})
    _quote_paths(spec, secured, uuid_param)
    add_webhooks(spec, secured, uuid_param, _errors)
    _health_paths(spec)


def _quote_paths(spec: APISpec, secured: list[dict[str, list[str]]], uuid_param: dict[str, Any]) -> None:
    quote = {"application/json": {"schema": "Quote"}}
    spec.path(path="/api/quotes", operations={"post": {
        "operationId": "createQuote", "tags": ["Quotes"], "security": secured,
        "summary": "A firm rate for a pair and amount",
        "description": "Name the quote's `id` as `quote_id` in `POST /api/exchanges` before `expires_at`: the "
                       "exchange then gets exactly this rate and target amount. Each quote serves one exchange.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": "QuoteRequest"}}},
        "responses": {"201": {"description": "The quote", "content": quote,
                              "headers": {"Location": {"description": "The quote's URL.", "required": True,
                                                       "schema": {"type": "string"}}}},
                      **_errors("400", "401", "413", "422", "429", "503")},
    }})
    spec.path(path="/api/quotes/{quote_id}", operations={"get": {
        "operationId": "getQuote", "tags": ["Quotes"], "security": secured,
        "summary": "A quote, and whether it is still open",
        "parameters": [{"name": "quote_id", **uuid_param}],
        "responses": {"200": {"description": "The quote", "content": quote}, **_errors("401", "404", "429", "503")},
    }})


def _create_exchange_operation(secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "operationId": "createExchange", "tags": ["Exchanges"],
        "summary": "Exchange money between two currencies of one account",
        "security": secured,
        "parameters": [{"in": "header", "name": "Idempotency-Key", "required": False,
                        "description": "The same key and body replay the first answer.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_CHARS,
                                   "pattern": "^[!-~]+$"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": "ExchangeRequest"}}},
        "responses": {
            "202": {"description": "Accepted; follow `status_url`.",
                    "headers": {"Location": {"description": "The same as `status_url`.", "required": True,
                                             "schema": {"type": "string"}},
                                "Idempotent-Replayed": {"description": "Present on a replay of an earlier request "
                                                                       "with the same Idempotency-Key and body.",
                                                        "schema": {"type": "string", "enum": ["true"]}}},
                    "content": {"application/json": {"schema": "ExchangeAccepted"}}},
            **_errors("400", "401", "404", "409", "413", "422", "429", "503"),
        },
    }


def _health_paths(spec: APISpec) -> None:
    spec.path(path="/api/health", operations={"get": {
        "operationId": "getHealth", "tags": ["Health"], "security": [],
        "summary": "The process answers (liveness)",
        "description": "Touches nothing else: a failing dependency shows in `/api/ready`, not here.",
        "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}},
    }})
    outcome = {"type": "string", "description": "`ok`, or what is wrong in a few words (never a host or port)."}
    readiness = {"type": "object", "required": ["status", "checks"], "additionalProperties": False,
                 "properties": {
                     "status": {"type": "string", "enum": ["ready", "not_ready"]},
                     "checks": {"type": "object", "required": ["database", "migrations", "broker"],
                                "additionalProperties": False,
                                "properties": {"database": outcome, "migrations": outcome,
                                               "broker": {**outcome, "description": "`ok`, `embedded` (the "
                                                          "in-process broker of `make run`) or `unreachable`."}}}},
                 "example": {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}}
    content = {"application/json": {"schema": readiness}}
    spec.path(path="/api/ready", operations={"get": {
        "operationId": "getReadiness", "tags": ["Health"], "security": [],
        "summary": "The process can do its work (readiness)",
        "description": "The database answers, its schema is the one this code needs, and the broker is "
                       "reachable. Cached for two seconds.",
        "responses": {"200": {"description": "Ready", "content": content},
                      "503": {"description": "Not ready: `checks` says which dependency failed.", "content": content,
                              "headers": ERROR_HEADERS["503"]}},
    }})


@bp.get("/openapi.json")
def openapi_json() -> Response:
    document = current_app.extensions.get("fx.openapi")
    if document is None:
        document = current_app.extensions["fx.openapi"] = build_spec(current_app.extensions["fx.settings"])
    return jsonify(document)


@bp.get("/docs")
def docs() -> str:
    return render_template("api/docs.html")


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str) -> Response:
    # Swagger UI ships inside a Python package: the docs work offline.
    return send_from_directory(str(swagger_ui_path), filename)
