"""The webhook API: a customer's endpoints, their secrets, the deliveries made and their replay."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from marshmallow import RAISE, Schema, fields, validate

from errors import ValidationFailed
from services.webhooks import delivery, endpoints, log
from services.webhooks.egress import EgressPolicy
from web.api import json_body
from web.auth import customer_required
from web.schemas import validated

bp = Blueprint("webhooks", __name__, url_prefix="/api")


class EndpointRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=validate.Length(min=1, max=endpoints.MAX_URL_CHARS), metadata={
        "description": "Where events are POSTed: an absolute http:// or https:// URL.",
        "example": "https://example.com/hooks/fx"})
    description = fields.String(load_default="", validate=validate.Length(max=200),
                                metadata={"example": "order service"})


_ENDPOINT_REQUEST = EndpointRequestSchema()


def _engine() -> Any:
    return current_app.extensions["fx.engine"]


def endpoint_json(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    answer = {"id": str(row.id), "url": row.url, "description": row.description,
              "created_at": row.created_at.isoformat(),
              "disabled_at": None if row.disabled_at is None else row.disabled_at.isoformat()}
    if with_secret:
        answer["secret"] = row.secret
        answer["previous_secret_expires_at"] = (None if row.previous_expires_at is None
                                                else row.previous_expires_at.isoformat())
    return answer


def delivery_json(entry: dict[str, Any]) -> dict[str, Any]:
    d = entry["delivery"]
    return {
        "id": str(d.id), "event_id": d.event_id, "event_type": d.type, "exchange": str(d.exchange_id),
        "endpoint": str(d.endpoint_id), "status": d.status, "attempts_made": len(entry["attempts"]),
        "next_attempt_at": d.next_attempt_at.isoformat() if d.status == "pending" and d.next_attempt_at else None,
        "delivered_at": None if d.delivered_at is None else d.delivered_at.isoformat(),
        "attempts": [{"attempt": a.attempt, "at": a.attempted_at.isoformat(), "status_code": a.status_code,
                      "latency_ms": a.latency_ms, "response": a.response_snippet} for a in entry["attempts"]],
    }


@bp.post("/webhook-endpoints")
@customer_required
def create_endpoint() -> tuple[Response, int]:
    data = validated(_ENDPOINT_REQUEST, json_body())
    settings = current_app.extensions["fx.settings"]
    row = endpoints.create_endpoint(_engine(), g.principal.customer_id, data["url"], data["description"],
                                    egress=EgressPolicy(settings.webhook_networks),
                                    max_endpoints=settings.webhook_max_endpoints)
    response = jsonify(endpoint_json(row, with_secret=True))
    response.headers["Location"] = url_for("webhooks.get_endpoint", endpoint_id=row.id)
    return response, 201


@bp.get("/webhook-endpoints")
@customer_required
def list_endpoints() -> Response:
    return jsonify(data=[endpoint_json(row) for row in endpoints.endpoints_of(_engine(), g.principal.customer_id)])


@bp.get("/webhook-endpoints/<uuid:endpoint_id>")
@customer_required
def get_endpoint(endpoint_id: uuid.UUID) -> Response:
    return jsonify(endpoint_json(endpoints.get_endpoint(_engine(), endpoint_id, g.principal.customer_id)))


@bp.delete("/webhook-endpoints/<uuid:endpoint_id>")
@customer_required
def disable_endpoint(endpoint_id: uuid.UUID) -> tuple[str, int]:
    endpoints.disable(_engine(), endpoint_id, g.principal.customer_id)
    return "", 204


@bp.post("/webhook-endpoints/<uuid:endpoint_id>/rotate-secret")
@customer_required
def rotate_secret(endpoint_id: uuid.UUID) -> Response:
    """A new secret; deliveries carry a signature with the old one too, for 24 hours."""
    row = endpoints.rotate_secret(_engine(), endpoint_id, g.principal.customer_id)
    return jsonify(endpoint_json(row, with_secret=True))


@bp.get("/webhook-endpoints/<uuid:endpoint_id>/deliveries")
@customer_required
def list_deliveries(endpoint_id: uuid.UUID) -> Response:
    endpoints.get_endpoint(_engine(), endpoint_id, g.principal.customer_id)
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise ValidationFailed("The query has invalid parameters.", fields={"limit": ["Must be 1 to 100."]})
    entries = log.deliveries(_engine(), customer_id=g.principal.customer_id, endpoint_id=endpoint_id,
                             limit=int(limit))
    return jsonify(data=[delivery_json(entry) for entry in entries])


@bp.post("/webhook-deliveries/<uuid:delivery_id>/replay")
@customer_required
def replay(delivery_id: uuid.UUID) -> tuple[Response, int]:
    """Send the event again now, with a fresh schedule of retries."""
    log.owner_of(_engine(), delivery_id, g.principal.customer_id)
    delivery.replay(_engine(), delivery_id, queue=current_app.extensions["fx.settings"].queue_name)
    entry = log.deliveries(_engine(), customer_id=g.principal.customer_id, limit=1, delivery_id=delivery_id)
    return jsonify(delivery_json(entry[0])), 202
