"""The accept's writes: the hold, the exchange row, its first outbox message and its first timeline entry.

On PostgreSQL a plain request's accept is ONE statement, run on its own (autocommit: no BEGIN,
no COMMIT round trip): data-modifying CTEs insert the exchange from the hold's RETURNING, and
the message and the entry from the exchange's, so a refused hold writes nothing, and a
statement that fails (a key another request just used) writes nothing either. When it inserts
nothing, services/exchanges.py runs the transaction that says why. That transaction (and a
request with a quote, which takes the quote between the hold and the insert) writes the hold,
then the rest: on PostgreSQL one statement, on SQLite three.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Update, bindparam, exists, insert, select, update

from domain import states as machine
from domain.states import ExchangeState
from infra.database import insert_on_conflict_in
from models import AccountKind, AccountStatus, accounts, balances, exchange_events, exchanges, outbox_messages
from outbox.store import OutboxRow
from outbox.writer import outbox_values

ACCEPT_STEP = "accept"

_EXCHANGE_COLUMNS = ("id", "account_id", "from_currency", "to_currency", "amount", "state", "attempt", "claim_token",
                     "step_epoch", "outcome_unknown", "idempotency_key", "request_fingerprint", "created_at",
                     "updated_at", "progressed_at", "quote_id", "rate", "to_amount", "quote_expires_at")
_MESSAGE_COLUMNS = ("id", "queue", "actor", "payload", "created_at", "available_at", "attempts", "trace_headers")
_EVENT_COLUMNS = ("step", "attempt", "outcome", "state", "message_id", "detail", "created_at")


class KeyTaken(Exception):
    """The account already has an exchange under this Idempotency-Key: roll back, then replay."""


def hold_statement(owned: bool, *, unused_key: bool = False) -> Update:
    """Hold `h_amount` on the balance, if the funds and the account (and its owner) say yes; with
    `unused_key`, only while the account has no exchange under `h_key` (a replay holds nothing)."""
    amount = bindparam("h_amount", type_=balances.c.available.type)
    conditions = [
        balances.c.account_id == bindparam("h_account"),
        balances.c.currency == bindparam("h_currency"),
        balances.c.available >= amount,
        exists().where(
            accounts.c.id == bindparam("h_account"),
            accounts.c.kind == AccountKind.CUSTOMER,
            accounts.c.status == AccountStatus.ACTIVE,
            *([accounts.c.customer_id == bindparam("h_owner")] if owned else []),
        ),
    ]
    if unused_key:
        conditions.append(~exists().where(exchanges.c.account_id == bindparam("h_account"),
                                          exchanges.c.idempotency_key == bindparam("h_key")))
    return (update(balances).where(*conditions)
            .values(available=balances.c.available - amount, held=balances.c.held + amount,
                    updated_at=bindparam("h_now")))


#: Built once per variant (with an owner to check, or without): every transactional accept runs one.
HOLD = {owned: hold_statement(owned) for owned in (False, True)}


def _params(table: Any, prefix: str, columns: tuple[str, ...]) -> list[Any]:
    return [bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in columns]


def _insert_exchange(dialect: str) -> Insert:
    """A taken (account, Idempotency-Key) inserts nothing instead of failing: no lookup first,
    and no error in the database's log for a replay."""
    return (insert_on_conflict_in(dialect, exchanges)
            .values(dict(zip(_EXCHANGE_COLUMNS, _params(exchanges, "x_", _EXCHANGE_COLUMNS), strict=True)))
            .on_conflict_do_nothing(index_elements=[exchanges.c.account_id, exchanges.c.idempotency_key])
            .returning(exchanges.c.id))


def _rest_from(accepted: Any) -> Insert:
    """The first message and the timeline entry, inserted from the `accepted` exchange CTE's rows."""
    message = (insert(outbox_messages)
               .from_select(_MESSAGE_COLUMNS, select(*_params(outbox_messages, "o_", _MESSAGE_COLUMNS))
                            .select_from(accepted))
               .cte("first_message"))
    return (insert(exchange_events)
            .from_select(("exchange_id", *_EVENT_COLUMNS),
                         select(accepted.c.id, *_params(exchange_events, "v_", _EVENT_COLUMNS)))
            .add_cte(message)
            .returning(exchange_events.c.exchange_id))


def _all_in_one() -> Insert:
    return _rest_from(_insert_exchange("postgresql").cte("accepted_exchange"))


def _at_once(owned: bool, keyed: bool) -> Insert:
    hold = hold_statement(owned, unused_key=keyed).returning(balances.c.account_id).cte("hold")
    accepted = (insert(exchanges)
                .from_select(_EXCHANGE_COLUMNS, select(*_params(exchanges, "x_", _EXCHANGE_COLUMNS)).select_from(hold))
                .returning(exchanges.c.id)
                .cte("accepted_exchange"))
    return _rest_from(accepted)


#: Built once each: every accepted exchange runs them.
_ALL_IN_ONE = _all_in_one()
_AT_ONCE = {(owned, keyed): _at_once(owned, keyed) for owned in (False, True) for keyed in (False, True)}
_INSERT_EXCHANGE = _insert_exchange("sqlite")
_INSERT_EVENT = insert(exchange_events)
_INSERT_OUTBOX = insert(outbox_messages)


def _rows(conn: Connection, exchange: dict[str, Any], queue: str, trace_headers: dict[str, str] | None,
          delay: timedelta | None, now: datetime, detail: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first message's row and the timeline entry's, for `exchange`."""
    message = outbox_values(conn, actor=machine.QUOTE.actor, payload={"exchange_id": str(exchange["id"])},
                            queue=queue, delay=delay, trace_headers=trace_headers, now=now)
    event = {"step": ACCEPT_STEP, "attempt": 0, "outcome": "accepted", "state": ExchangeState.PENDING,
             "detail": detail, "created_at": now, "message_id": message["id"]}
    return message, event


def _first_message(message: dict[str, Any]) -> OutboxRow:
    return OutboxRow(message["id"], message["queue"], message["actor"], message["payload"], message["created_at"], 0,
                     message["trace_headers"])


def _statement_params(exchange: dict[str, Any], message: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    return {**{f"x_{k}": v for k, v in exchange.items()}, **{f"o_{k}": v for k, v in message.items()},
            **{f"v_{k}": v for k, v in event.items()}}


def accept_at_once(conn: Connection, hold: dict[str, Any], exchange: dict[str, Any], *, queue: str,
                   trace_headers: dict[str, str] | None, delay: timedelta | None, now: datetime,
                   detail: dict[str, Any]) -> OutboxRow | None:
    """PostgreSQL, on an autocommit connection: the hold (`hold`: its h_ parameters) and every
    insert in one statement. None when the hold said no (funds, account, owner, a used key):
    nothing was written, and the transactional accept says why."""
    message, event = _rows(conn, exchange, queue, trace_headers, delay, now, detail)
    statement = _AT_ONCE[hold.get("h_owner") is not None, exchange.get("idempotency_key") is not None]
    if conn.execute(statement, {**hold, "h_key": exchange.get("idempotency_key"),
                                **_statement_params(exchange, message, event)}).first() is None:
        return None
    return _first_message(message)


def record_accepted(conn: Connection, exchange: dict[str, Any], *, queue: str,
                    trace_headers: dict[str, str] | None, delay: timedelta | None, now: datetime,
                    detail: dict[str, Any]) -> OutboxRow:
    """Insert the exchange (`exchange`: its columns), its first message (due after `delay`) and
    its "accepted" timeline entry, after the hold; KeyTaken when its Idempotency-Key was used before."""
    message, event = _rows(conn, exchange, queue, trace_headers, delay, now, detail)
    if conn.dialect.name == "postgresql":
        if conn.execute(_ALL_IN_ONE, _statement_params(exchange, message, event)).first() is None:
            raise KeyTaken(exchange.get("idempotency_key"))
        return _first_message(message)
    if conn.execute(_INSERT_EXCHANGE, {f"x_{k}": v for k, v in exchange.items()}).first() is None:
        raise KeyTaken(exchange.get("idempotency_key"))
    conn.execute(_INSERT_OUTBOX, message)
    conn.execute(_INSERT_EVENT, {"exchange_id": exchange["id"], **event})
    return _first_message(message)
