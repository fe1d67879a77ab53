"""Webhook events, written in the transaction of the transition they announce.

An exchange that ends (completed, refunded, failed) or is parked for a person gets one event;
each of its customer's live endpoints gets a delivery row and an outbox message, committed with
the transition: the event exists if and only if the transition does, and is then delivered at
least once. A customer without endpoints costs one indexed SELECT and nothing more.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from domain import customer_view
from domain.money import money_text, rate_text
from models import accounts, exchanges, webhook_deliveries, webhook_endpoints, webhook_events
from outbox.writer import enqueue

#: The actor that delivers one webhook delivery (jobs/webhooks.py).
DELIVER_ACTOR = "deliver_webhook"
#: The states whose reaching is an event, and the event's type.
EVENT_FOR_STATE = {
    "completed": "exchange.completed",
    "refunded": "exchange.refunded",
    "failed": "exchange.failed",
    "needs_attention": "exchange.needs_attention",
}
EVENT_TYPES = tuple(EVENT_FOR_STATE.values())

#: Built once: the live endpoints of the account's customer.
_ENDPOINTS = (
    select(webhook_endpoints.c.id, webhook_endpoints.c.customer_id)
    .join(accounts, accounts.c.customer_id == webhook_endpoints.c.customer_id)
    .where(accounts.c.id == bindparam("w_account"), webhook_endpoints.c.disabled_at.is_(None))
)


def emit(conn: Connection, exchange_id: uuid.UUID, account_id: uuid.UUID, state: str, *, queue: str,
         now: datetime) -> str | None:
    """The event for the exchange having reached `state`, in the caller's transaction: its id, or
    None when the state is not an event or nobody listens."""
    event_type = EVENT_FOR_STATE.get(state)
    if event_type is None:
        return None
    endpoints = conn.execute(_ENDPOINTS, {"w_account": account_id}).all()
    if not endpoints:
        return None
    row = conn.execute(select(exchanges).where(exchanges.c.id == exchange_id)).one()
    event_id = "msg_" + uuid.uuid4().hex
    body = json.dumps({"type": event_type, "timestamp": now.isoformat(), "data": exchange_data(row)},
                      separators=(",", ":"))
    conn.execute(insert(webhook_events), {"id": event_id, "customer_id": endpoints[0].customer_id,
                                          "exchange_id": exchange_id, "type": event_type, "body": body,
                                          "created_at": now})
    for endpoint in endpoints:
        delivery_id = uuid.uuid4()
        conn.execute(insert(webhook_deliveries), {
            "id": delivery_id, "event_id": event_id, "endpoint_id": endpoint.id, "status": "pending",
            "attempts": 0, "next_attempt_at": now, "claim_token": 0, "created_at": now})
        enqueue(conn, actor=DELIVER_ACTOR, payload={"delivery_id": str(delivery_id)}, queue=queue, now=now)
    return event_id


def exchange_data(row: Any) -> dict[str, Any]:
    """The exchange as its customer's API shows it (no internal error text)."""
    view = customer_view.of_exchange(row)
    return {
        "id": str(row.id), "account": str(row.account_id), "state": row.state, "status": view.status.value,
        "status_message": view.message, "failure_reason": view.failure_reason,
        "from_currency": row.from_currency, "to_currency": row.to_currency,
        "amount": money_text(row.amount, row.from_currency), "rate": rate_text(row.rate),
        "to_amount": money_text(row.to_amount, row.to_currency),
        "quote": None if row.quote_id is None else str(row.quote_id),
        "created_at": row.created_at.isoformat(),
    }
