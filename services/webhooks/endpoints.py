"""A customer's webhook endpoints: register, list, rotate the secret, disable."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, insert, select, update

from domain.egress import EgressRefused, Unresolved
from errors import NotFound, ValidationFailed
from models import customers, webhook_endpoints
from models.base import utcnow
from services.rows import one_or_not_found
from services.webhooks.egress import EgressPolicy
from services.webhooks.signing import new_secret
from settings import Settings

#: After a rotation, deliveries are signed with the old secret too, for this long.
ROTATION_OVERLAP = timedelta(hours=24)
MAX_URL_CHARS = 2000


class UnknownEndpoint(NotFound):
    code = "unknown_webhook_endpoint"


def check_url(url: str, egress: EgressPolicy) -> str:
    """An absolute http(s) URL whose host resolves to addresses `egress` allows; ValidationFailed
    naming `url` and why otherwise."""
    parts = urlsplit(url) if isinstance(url, str) else None
    try:
        host, port = (parts.hostname, parts.port) if parts is not None else (None, None)
    except ValueError:  # a port that is not a number, or out of range
        host = port = None
    if (parts is None or parts.scheme not in ("http", "https") or not host or len(url) > MAX_URL_CHARS
            or any(ord(char) < 0x20 or ord(char) == 0x7F for char in url)):
        raise ValidationFailed("The request has invalid fields.", fields={
            "url": [f"Must be an absolute http:// or https:// URL of at most {MAX_URL_CHARS} characters, "
                    "without control characters."]})
    try:
        egress.addresses(host, port or (443 if parts.scheme == "https" else 80))
    except Unresolved:
        pass  # a receiver whose name is not live yet: every delivery checks again before it connects
    except EgressRefused as refused:
        raise ValidationFailed("The request has invalid fields.", fields={
            "url": [f"Must lead to a public address: {refused.reason}."]}) from None
    return url


def create_endpoint(engine: Engine, customer_id: uuid.UUID, url: str, description: str = "", *,
                    egress: EgressPolicy, max_endpoints: int = Settings.webhook_max_endpoints) -> Any:
    """A new endpoint with its first secret; every later event of the customer's exchanges goes to it.

    Each live endpoint costs a delivery per event, so a customer has at most `max_endpoints` live
    ones, and never two at one URL (the same event twice, under two secrets). The customer's row
    is locked first, so racing registrations are counted one after another (on PostgreSQL; SQLite
    runs one writer at a time by itself)."""
    row = {"id": uuid.uuid4(), "customer_id": customer_id, "url": check_url(url, egress), "description": description,
           "secret": new_secret(), "created_at": utcnow()}
    with engine.begin() as conn:
        conn.execute(select(customers.c.id).where(customers.c.id == customer_id).with_for_update())
        live = list(conn.execute(select(webhook_endpoints.c.url).where(
            webhook_endpoints.c.customer_id == customer_id, webhook_endpoints.c.disabled_at.is_(None))).scalars())
        if row["url"] in live:
            raise ValidationFailed("The request has invalid fields.", fields={
                "url": ["You already have an endpoint at this URL: each event would reach it twice."]})
        if len(live) >= max_endpoints:
            raise ValidationFailed("The request has invalid fields.", fields={
                "url": [f"You have {len(live)} endpoints, the most allowed: disable one before adding another."]})
        conn.execute(insert(webhook_endpoints), row)
    return get_endpoint(engine, row["id"], customer_id)


def get_endpoint(engine: Engine, endpoint_id: uuid.UUID, customer_id: uuid.UUID | None) -> Any:
    query = select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
    if customer_id is not None:
        query = query.where(webhook_endpoints.c.customer_id == customer_id)
    return one_or_not_found(engine, query, UnknownEndpoint("No such webhook endpoint."))


def endpoints_of(engine: Engine, customer_id: uuid.UUID | None) -> list[Any]:
    """The customer's endpoints (every customer's, for None), newest first, disabled ones included."""
    query = select(webhook_endpoints).order_by(webhook_endpoints.c.created_at.desc())
    if customer_id is not None:
        query = query.where(webhook_endpoints.c.customer_id == customer_id)
    with engine.connect() as conn:
        return list(conn.execute(query))


def rotate_secret(engine: Engine, endpoint_id: uuid.UUID, customer_id: uuid.UUID | None,
                  now: datetime | None = None) -> Any:
    """A new secret; the current one keeps signing too for ROTATION_OVERLAP."""
    current = get_endpoint(engine, endpoint_id, customer_id)
    now = now or utcnow()
    with engine.begin() as conn:
        conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == current.id).values(
            secret=new_secret(), previous_secret=current.secret, previous_expires_at=now + ROTATION_OVERLAP))
    return get_endpoint(engine, endpoint_id, customer_id)


def disable(engine: Engine, endpoint_id: uuid.UUID, customer_id: uuid.UUID | None) -> None:
    """No new events go to it; deliveries already owed to it are given up at their next attempt."""
    get_endpoint(engine, endpoint_id, customer_id)
    with engine.begin() as conn:
        conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id,
                                                     webhook_endpoints.c.disabled_at.is_(None))
                     .values(disabled_at=utcnow()))


def secrets_in_use(endpoint: Any, now: datetime) -> list[str]:
    """The secrets an attempt is signed with now: the current one, and the previous within its overlap."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_expires_at and endpoint.previous_expires_at > now:
        keys.append(endpoint.previous_secret)
    return keys
