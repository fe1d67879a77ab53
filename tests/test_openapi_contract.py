"""The API does what its OpenAPI document says: schemathesis against the app's own /api/openapi.json.

The document is downloaded from the app, not read from a file, so what is tested is what
clients get. Every operation is called with generated valid and invalid requests (the
document's examples, schemathesis' boundary "coverage" cases, then random ones) as the
test customer; half of the generated ids are replaced by the customer's real account and
exchange, so the 200 and 202 answers are checked too, not only the 404s. Every answer
must be no 5xx, a documented status code with its documented content type, headers and
body, and an invalid request must be refused with a 4xx. Generation is derandomized:
the same requests on every run.

Schemathesis' `from_fixture` does not run under pytest 9.2 (it sets `Node._nodeid`), so
the schema is loaded once at import from an app that only serves the document, and each
test sends its requests to an app on the backend under test (`Live`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from conftest import ApiCustomer, settings_for
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy import Engine

from app import create_app
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from services import timeline
from services.accounts import open_account
from services.exchanges import ExchangeRequest, create_exchange
from services.quotes import QuoteRequest, create_quote
from services.webhooks.endpoints import create_endpoint
from settings import Settings
from tests.webhook_support import LOOPBACK

#: Generated requests per operation in the random phase (the examples and boundary cases come on top).
MAX_EXAMPLES = 60
#: The contract test makes hundreds of calls with one key; the limit itself is tested in test_api_security.py.
UNLIMITED = "1000000 per minute"

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    ignored_auth,
    missing_required_header,
]

CONFIG = schemathesis.Config.from_dict({
    "seed": 20240601,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                   "mode": "all"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
})

#: Serves only the document (default settings, as the apps under test): no request here touches a database.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", create_app(Settings(database_url="sqlite://")),
                                        config=CONFIG)


@dataclass(frozen=True)
class Live:
    """The app on the backend under test, and the test customer's key and real ids in it."""

    app: Flask
    client: FlaskClient
    api_key: str
    ids: dict[str, str]


#: The running test's Live; the strategies below read it when they draw, after the fixture set it.
_live: list[Live] = []


#: A UUID as the document's `format: uuid` means it.
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def real_id(name: str, generated: Any) -> Any:
    """The live account's or exchange's id in place of a generated UUID; the generated value in
    cases built at collection, and where it is not a UUID (a negative case must stay invalid)."""
    if not _live or not isinstance(generated, str) or not CANONICAL_UUID.fullmatch(generated):
        return generated
    return _live[-1].ids.get(name, generated)


#: Stands for the customer's key in cases built at collection, before any customer exists.
KEY_PLACEHOLDER = "customer-key"


@schema.auth(refresh_interval=None, retry_on=[])
class CustomerKey:
    """The test customer's key on every request, except those schemathesis sends without one on purpose."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return KEY_PLACEHOLDER

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.hook("flatmap_path_parameters")
def sometimes_real_ids(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    if not path_parameters:
        return st.just(path_parameters)
    return st.booleans().map(lambda real: {
        name: real_id(name, value) if real else value for name, value in path_parameters.items()
    })


@schema.hook("flatmap_body")
def sometimes_real_account(context: Any, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or not {"account", "quote_id"} & set(body):
        return st.just(body)
    ids = {"account": "account_id", "quote_id": "quote_id"}
    return st.booleans().map(lambda real: {
        **body, **{name: real_id(ids[name], body[name]) for name in ids if name in body}} if real else body)


@pytest.fixture
def live(engine: Engine, customer: ApiCustomer) -> Iterator[Live]:
    account = open_account(engine, "Test Customer", {"CAD": Decimal("1000000.00"), "USD": Decimal("500.00")},
                           customer_id=customer.id)
    exchange = create_exchange(engine, ExchangeRequest(account, "CAD", "USD", Decimal("10.00")),
                               queue="exchanges", owner=customer.id).exchange_id
    with engine.begin() as conn:  # some trouble, so the timeline's `trouble` is an event, not null
        timeline.record(conn, exchange, step="quote_exchange", outcome="retrying", state="pending", attempt=1,
                        worker="worker-1:42:Thread-1", error="bank answered 503", duration_ms=12,
                        detail={"status": 503})
    quote = create_quote(engine, TableRateProvider(DEFAULT_USD_VALUES), customer.id,
                         QuoteRequest("CAD", "USD", Decimal("10.00")), ttl=timedelta(hours=1))
    endpoint = create_endpoint(engine, customer.id, "http://127.0.0.1:9/hooks", egress=LOOPBACK)
    app = create_app(settings_for(engine, api_rate_limit=UNLIMITED, unverified_rate_limit=UNLIMITED))
    app.extensions["fx.engine"].dispose()
    app.extensions["fx.engine"] = engine
    _live.append(Live(app, app.test_client(), customer.api_key,
                      {"account_id": str(account), "exchange_id": str(exchange), "quote_id": str(quote.id),
                       "endpoint_id": str(endpoint.id)}))
    yield _live[-1]
    _live.pop()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_published_openapi_document(case: schemathesis.Case, live: Live) -> None:
    if (case.headers or {}).get("Authorization") == f"Bearer {KEY_PLACEHOLDER}":
        case.headers["Authorization"] = f"Bearer {live.api_key}"
    case.call_and_validate(app=live.app, session=live.client, checks=CHECKS)


def test_the_document_lists_every_operation_its_tag_its_security_and_its_error_headers(
    anonymous_client: FlaskClient,
) -> None:
    document = anonymous_client.get("/api/openapi.json").get_json()
    operations = {(method.upper(), path): item for path, methods in document["paths"].items()
                  for method, item in methods.items()}
    assert set(operations) == {
        ("POST", "/api/exchanges"),
        ("GET", "/api/exchanges"),
        ("GET", "/api/exchanges/{exchange_id}"),
        ("GET", "/api/exchanges/{exchange_id}/timeline"),
        ("GET", "/api/accounts/{account_id}"),
        ("POST", "/api/quotes"),
        ("GET", "/api/quotes/{quote_id}"),
        ("POST", "/api/webhook-endpoints"),
        ("GET", "/api/webhook-endpoints"),
        ("GET", "/api/webhook-endpoints/{endpoint_id}"),
        ("DELETE", "/api/webhook-endpoints/{endpoint_id}"),
        ("POST", "/api/webhook-endpoints/{endpoint_id}/rotate-secret"),
        ("GET", "/api/webhook-endpoints/{endpoint_id}/deliveries"),
        ("POST", "/api/webhook-deliveries/{delivery_id}/replay"),
        ("GET", "/api/health"),
        ("GET", "/api/ready"),
    }
    for key, operation in operations.items():
        assert operation["tags"], key
        if operation["tags"] == ["Health"]:
            assert operation["security"] == []  # for load balancers: no key
            continue
        assert operation["security"] == [{"apiKey": []}]
        responses = operation["responses"]
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "`Authorization: Bearer fxk_...`"}
    # The customer's timeline names no worker, error or operator: its events carry none of those fields.
    event = document["components"]["schemas"]["CustomerEvent"]["properties"]
    assert set(event) == {"at", "event", "message"}


def test_every_field_of_every_schema_has_an_example_and_every_operation_a_summary_and_a_tag(
    anonymous_client: FlaskClient,
) -> None:
    document = anonymous_client.get("/api/openapi.json").get_json()
    without = [f"{name}.{field}" for name, schema in document["components"]["schemas"].items()
               for field, prop in schema.get("properties", {}).items()
               if "example" not in prop and "$ref" not in prop and "$ref" not in prop.get("items", {})]
    assert not without
    tags = {tag["name"] for tag in document["tags"]}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation["summary"] and set(operation["tags"]) <= tags, (method, path)
