"""The accept's writes: the exchange row, its first outbox message and its first timeline entry.

On PostgreSQL they are one statement (data-modifying CTEs: the message and the entry are
inserted from the exchange insert's RETURNING, so a taken Idempotency-Key inserts none of
them); on SQLite, three. Either way in the caller's transaction, after the hold.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, insert, select

from domain import states as machine
from domain.states import ExchangeState
from infra.database import insert_on_conflict_in
from models import exchange_events, exchanges, outbox_messages
from outbox.store import OutboxRow
from outbox.writer import enqueue, outbox_values

ACCEPT_STEP = "accept"

_EXCHANGE_COLUMNS = ("id", "account_id", "from_currency", "to_currency", "amount", "state", "attempt", "claim_token",
                     "step_epoch", "outcome_unknown", "idempotency_key", "request_fingerprint", "created_at",
                     "updated_at", "progressed_at", "quote_id", "rate", "to_amount", "quote_expires_at")
_MESSAGE_COLUMNS = ("id", "queue", "actor", "payload", "created_at", "available_at", "attempts", "trace_headers")
_EVENT_COLUMNS = ("step", "attempt", "outcome", "state", "message_id", "detail", "created_at")


class KeyTaken(Exception):
    """The account already has an exchange under this Idempotency-Key: roll back, then replay."""


def _params(table: Any, prefix: str, columns: tuple[str, ...]) -> list[Any]:
    return [bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in columns]


def _insert_exchange(dialect: str) -> Insert:
    """A taken (account, Idempotency-Key) inserts nothing instead of failing: no lookup first,
    and no error in the database's log for a replay."""
    return (insert_on_conflict_in(dialect, exchanges)
            .values(dict(zip(_EXCHANGE_COLUMNS, _params(exchanges, "x_", _EXCHANGE_COLUMNS), strict=True)))
            .on_conflict_do_nothing(index_elements=[exchanges.c.account_id, exchanges.c.idempotency_key])
            .returning(exchanges.c.id))


def _all_in_one() -> Insert:
    accepted = _insert_exchange("postgresql").cte("accepted_exchange")
    message = (insert(outbox_messages)
               .from_select(_MESSAGE_COLUMNS, select(*_params(outbox_messages, "o_", _MESSAGE_COLUMNS))
                            .select_from(accepted))
               .cte("first_message"))
    return (insert(exchange_events)
            .from_select(("exchange_id", *_EVENT_COLUMNS),
                         select(accepted.c.id, *_params(exchange_events, "v_", _EVENT_COLUMNS)))
            .add_cte(message)
            .returning(exchange_events.c.exchange_id))


#: Built once each: every accepted exchange runs them.
_ALL_IN_ONE = _all_in_one()
_INSERT_EXCHANGE = _insert_exchange("sqlite")
_INSERT_EVENT = insert(exchange_events)


def record_accepted(conn: Connection, exchange: dict[str, Any], *, queue: str,
                    trace_headers: dict[str, str] | None, delay: timedelta | None, now: datetime,
                    detail: dict[str, Any]) -> OutboxRow:
    """Insert the exchange (`exchange`: its columns), its first message (due after `delay`) and
    its "accepted" timeline entry; KeyTaken when its Idempotency-Key was used before."""
    exchange_id: uuid.UUID = exchange["id"]
    payload = {"exchange_id": str(exchange_id)}
    event = {"step": ACCEPT_STEP, "attempt": 0, "outcome": "accepted", "state": ExchangeState.PENDING,
             "detail": detail, "created_at": now}
    if conn.dialect.name == "postgresql":
        message = outbox_values(conn, actor=machine.QUOTE.actor, payload=payload, queue=queue, delay=delay,
                                trace_headers=trace_headers, now=now)
        params = {**{f"x_{k}": v for k, v in exchange.items()}, **{f"o_{k}": v for k, v in message.items()},
                  **{f"v_{k}": v for k, v in event.items()}, "v_message_id": message["id"]}
        if conn.execute(_ALL_IN_ONE, params).first() is None:
            raise KeyTaken(exchange.get("idempotency_key"))
        message_id = message["id"]
    else:
        if conn.execute(_INSERT_EXCHANGE, {f"x_{k}": v for k, v in exchange.items()}).first() is None:
            raise KeyTaken(exchange.get("idempotency_key"))
        message_id = enqueue(conn, actor=machine.QUOTE.actor, payload=payload, queue=queue,
                             trace_headers=trace_headers, now=now, delay=delay)
        conn.execute(_INSERT_EVENT, {"exchange_id": exchange_id, **event, "message_id": message_id})
    return OutboxRow(message_id, queue, machine.QUOTE.actor, payload, now, 0, trace_headers)
