"""The webhook operations and schemas of the API's OpenAPI document (web/openapi.py builds it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apispec import APISpec
from marshmallow import Schema, fields

from services.webhooks.events import EVENT_TYPES
from web.webhooks import EndpointRequestSchema

TAG = {"name": "Webhooks", "description": (
    "Events pushed to your endpoints: `" + "`, `".join(EVENT_TYPES) + "`. Each is signed per Standard Webhooks "
    "(`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 over `id.timestamp.body` with the "
    "endpoint's secret), delivered at least once (deduplicate on `webhook-id`), and retried with backoff for "
    "27.6 hours. The body is `{\"type\", \"timestamp\", \"data\"}`, `data` being the exchange as "
    "`GET /api/exchanges/{id}` shows it.")}


class EndpointSchema(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True, metadata={"example": "https://example.com/hooks/fx"})
    description = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    disabled_at = fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Set by DELETE: no events are sent to it after that."})


class EndpointWithSecretSchema(EndpointSchema):
    secret = fields.String(required=True, metadata={
        "description": "`whsec_` + base64 key: verify signatures with it. Shown on creation and rotation only.",
        "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    previous_secret_expires_at = fields.DateTime(required=True, allow_none=True, metadata={
        "description": "After a rotation: until then, each call is also signed with the previous secret."})


class AttemptSchema(Schema):
    attempt = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    status_code = fields.Integer(required=True, allow_none=True, metadata={"description": "Null: no answer."})
    latency_ms = fields.Integer(required=True)
    response = fields.String(required=True, metadata={"description": "The answer's first 500 characters, or "
                                                                     "why there was none."})


class DeliverySchema(Schema):
    id = fields.UUID(required=True)
    event_id = fields.String(required=True, metadata={"description": "The `webhook-id` header: the same on "
                                                                     "every attempt and replay.",
                                                      "example": "msg_0f3c9b2e6d1a4c8e9b7a5d3f1e2c4a6b"})
    event_type = fields.String(required=True, metadata={"enum": list(EVENT_TYPES)})
    exchange = fields.UUID(required=True)
    endpoint = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": ["pending", "delivered", "failed"]})
    attempts_made = fields.Integer(required=True)
    next_attempt_at = fields.DateTime(required=True, allow_none=True)
    delivered_at = fields.DateTime(required=True, allow_none=True)
    attempts = fields.List(fields.Nested(AttemptSchema), required=True)


class EndpointListSchema(Schema):
    data = fields.List(fields.Nested(EndpointSchema), required=True)


class DeliveryListSchema(Schema):
    data = fields.List(fields.Nested(DeliverySchema), required=True)


def add_webhooks(spec: APISpec, secured: list[dict[str, list[str]]], uuid_param: dict[str, Any],
                 errors: Callable[..., dict[str, Any]]) -> None:
    for name, schema in (("WebhookEndpointRequest", EndpointRequestSchema), ("WebhookEndpoint", EndpointSchema),
                         ("WebhookEndpointWithSecret", EndpointWithSecretSchema),
                         ("WebhookEndpointList", EndpointListSchema), ("WebhookDelivery", DeliverySchema),
                         ("WebhookDeliveryList", DeliveryListSchema)):
        spec.components.schema(name, schema=schema)

    def op(op_id: str, summary: str, answer: tuple[str, str | None], *codes: str, **extra: Any) -> dict[str, Any]:
        status, schema = answer
        body = {"description": summary}
        if schema:
            body["content"] = {"application/json": {"schema": schema}}
        return {"operationId": op_id, "tags": ["Webhooks"], "security": secured, "summary": summary,
                "responses": {status: body, **errors("401", "429", "503", *codes)}, **extra}

    endpoint_id = [{"name": "endpoint_id", **uuid_param}]
    spec.path(path="/api/webhook-endpoints", operations={
        "post": op("createWebhookEndpoint", "Register an endpoint; the answer holds its secret",
                   ("201", "WebhookEndpointWithSecret"), "400", "413", "422",
                   requestBody={"required": True,
                                "content": {"application/json": {"schema": "WebhookEndpointRequest"}}}),
        "get": op("listWebhookEndpoints", "Your endpoints, newest first (no secrets)", ("200", "WebhookEndpointList")),
    })
    spec.path(path="/api/webhook-endpoints/{endpoint_id}", operations={
        "get": op("getWebhookEndpoint", "An endpoint", ("200", "WebhookEndpoint"), "404", parameters=endpoint_id),
        "delete": op("disableWebhookEndpoint", "Stop sending to it", ("204", None), "404", parameters=endpoint_id),
    })
    spec.path(path="/api/webhook-endpoints/{endpoint_id}/rotate-secret", operations={"post": op(
        "rotateWebhookSecret", "A new secret; the old one keeps signing too for 24 hours",
        ("200", "WebhookEndpointWithSecret"), "404", parameters=endpoint_id)})
    spec.path(path="/api/webhook-endpoints/{endpoint_id}/deliveries", operations={"get": op(
        "listWebhookDeliveries", "What was sent to it, newest first, with every attempt",
        ("200", "WebhookDeliveryList"), "404", "422", parameters=[
            *endpoint_id, {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1,
                                                                      "maximum": 100, "default": 50}}])})
    spec.path(path="/api/webhook-deliveries/{delivery_id}/replay", operations={"post": op(
        "replayWebhookDelivery", "Send the event again now (same webhook-id), with a fresh schedule of retries",
        ("202", "WebhookDelivery"), "404", parameters=[{"name": "delivery_id", **uuid_param}])})
