"""Writing postings and the balance changes that go with them, inside the caller's transaction."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BindParameter, Connection, Insert, bindparam, insert, update

from domain.ledger import Posting
from errors import WorkflowError
from infra.database import insert_on_conflict_in
from models import balances, ledger_entries


class BalanceMismatch(WorkflowError, RuntimeError):
    """A balance row did not hold what the exchange's state says it must: a bug, never retried."""


_ENTRY_COLUMNS = ("account_id", "currency", "amount")


@functools.cache
def _insert_entries(count: int) -> Insert:
    """A multi-row INSERT of `count` entries with bound parameters, built once per size."""
    c = ledger_entries.c

    def param(name: str, column: str) -> BindParameter[object]:
        return bindparam(name, type_=c[column].type)  # typed: multi-row VALUES do not infer it

    return insert(ledger_entries).values([
        {"posting_id": param("posting_id", "posting_id"), "exchange_id": param("exchange_id", "exchange_id"),
         "kind": param("kind", "kind"), "created_at": param("created_at", "created_at"),
         **{column: param(f"{column}_{i}", column) for column in _ENTRY_COLUMNS}}
        for i in range(count)
    ])


def post(conn: Connection, posting: Posting, *, exchange_id: uuid.UUID | None, now: datetime) -> uuid.UUID:
    posting_id = uuid.uuid4()
    # One multi-row INSERT, not an executemany: psycopg pipelines an executemany and ends it
    # with a Flush after the Sync, which leaves PostgreSQL's idle_in_transaction_session_timeout
    # disarmed, so a worker frozen right after posting would hold its row locks indefinitely.
    params: dict[str, object] = {"posting_id": posting_id, "exchange_id": exchange_id, "kind": posting.kind,
                                 "created_at": now}
    for i, entry in enumerate(posting.entries):
        params.update({f"account_id_{i}": entry.account_id, f"currency_{i}": entry.currency,
                       f"amount_{i}": entry.amount})
    conn.execute(_insert_entries(len(posting.entries)), params)
    return posting_id


def consume_hold(conn: Connection, account_id: uuid.UUID, currency: str, amount: Decimal, now: datetime) -> None:
    """The held amount leaves the balance (it was debited)."""
    _change(conn, account_id, currency, now, held=-amount)


def release_hold(conn: Connection, account_id: uuid.UUID, currency: str, amount: Decimal, now: datetime) -> None:
    """The held amount becomes available again (nothing was debited)."""
    _change(conn, account_id, currency, now, held=-amount, available=amount)


@functools.cache
def _add_available(dialect: str) -> Insert:
    """The upsert that credits a balance, built once per dialect (PostgreSQL's or SQLite's ON CONFLICT)."""
    statement = insert_on_conflict_in(dialect, balances).values(
        account_id=bindparam("b_account"), currency=bindparam("b_currency"), available=bindparam("b_amount"),
        held=Decimal(0), updated_at=bindparam("b_now"))
    return statement.on_conflict_do_update(
        index_elements=[balances.c.account_id, balances.c.currency],
        set_={"available": balances.c.available + statement.excluded.available,
              "updated_at": statement.excluded.updated_at},
    )


def add_available(conn: Connection, account_id: uuid.UUID, currency: str, amount: Decimal, now: datetime) -> None:
    """Credit a balance, creating the row for a currency the customer did not hold yet."""
    conn.execute(_add_available(conn.dialect.name),
                 {"b_account": account_id, "b_currency": currency, "b_amount": amount, "b_now": now})


#: Built once: each debit, credit and refund moves a balance with it.
_CHANGE = (
    update(balances)
    .where(balances.c.account_id == bindparam("c_account"), balances.c.currency == bindparam("c_currency"),
           balances.c.held + bindparam("c_held", type_=balances.c.held.type) >= 0)
    .values(held=balances.c.held + bindparam("c_held", type_=balances.c.held.type),
            available=balances.c.available + bindparam("c_available", type_=balances.c.available.type),
            updated_at=bindparam("c_now"))
)


def _change(conn: Connection, account_id: uuid.UUID, currency: str, now: datetime, *, held: Decimal,
            available: Decimal = Decimal(0)) -> None:
    result = conn.execute(_CHANGE, {"c_account": account_id, "c_currency": currency, "c_held": held,
                                    "c_available": available, "c_now": now})
    if result.rowcount != 1:
        raise BalanceMismatch(f"balance {account_id}/{currency} does not hold {-held}")
