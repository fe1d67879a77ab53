"""What was sent where: deliveries with their attempts, for the customer's API, the CLI and operators."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, select

from errors import NotFound
from models import webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_events
from services.rows import one_or_not_found


class UnknownDelivery(NotFound):
    code = "unknown_webhook_delivery"


_DELIVERIES = (
    select(webhook_deliveries, webhook_events.c.type, webhook_events.c.exchange_id, webhook_endpoints.c.url,
           webhook_endpoints.c.customer_id)
    .join(webhook_events, webhook_events.c.id == webhook_deliveries.c.event_id)
    .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
)


def deliveries(engine: Engine, *, customer_id: uuid.UUID | None = None, endpoint_id: uuid.UUID | None = None,
               exchange_id: uuid.UUID | None = None, delivery_id: uuid.UUID | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, each with its attempts (oldest first)."""
    query = _DELIVERIES.order_by(webhook_deliveries.c.created_at.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(webhook_endpoints.c.customer_id == customer_id)
    if endpoint_id is not None:
        query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
    if exchange_id is not None:
        query = query.where(webhook_events.c.exchange_id == exchange_id)
    if delivery_id is not None:
        query = query.where(webhook_deliveries.c.id == delivery_id)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        tried: dict[uuid.UUID, list[Any]] = defaultdict(list)
        if rows:
            for a in conn.execute(select(webhook_attempts).where(
                    webhook_attempts.c.delivery_id.in_([r.id for r in rows])).order_by(webhook_attempts.c.id)):
                tried[a.delivery_id].append(a)
    return [{"delivery": r, "attempts": tried[r.id]} for r in rows]


def owner_of(engine: Engine, delivery_id: uuid.UUID, customer_id: uuid.UUID | None) -> Any:
    """The delivery, if it exists (and, with `customer_id`, is that customer's)."""
    query = _DELIVERIES.where(webhook_deliveries.c.id == delivery_id)
    if customer_id is not None:
        query = query.where(webhook_endpoints.c.customer_id == customer_id)
    return one_or_not_found(engine, query, UnknownDelivery("No such webhook delivery."))
