"""Parallel requests cannot spend the same money twice.

Real threads send real HTTP requests to a real threaded server, released together by a
barrier, asking in total for more than the balance. The database's row lock on the
balance is the only thing that stands between them and an overdraft.
"""

from __future__ import annotations

import functools
import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select

from harness.wsgi import serving as serve_in_thread
from models import balances, exchange_events, exchanges, outbox_messages
from services.accounts import open_account
from tests.conftest import ApiCustomer
from tests.support.race import all_at_once

#: A generous bound on one request, so a deadlock fails the test instead of hanging it.
REQUEST_TIMEOUT_SECONDS = 60


@contextmanager
def serving(app: Flask) -> Iterator[tuple[str, int]]:
    """The app behind a real threaded WSGI server on a free local port: (host, port)."""
    with serve_in_thread(app) as url:
        address = urlsplit(url)
        yield address.hostname or "127.0.0.1", address.port or 80


def post_json(address: tuple[str, int], path: str, body: dict[str, Any],
              headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(*address, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def race(address: tuple[str, int], bodies: list[dict[str, Any]],
         headers: dict[str, str]) -> list[tuple[int, dict[str, Any]]]:
    """POST every body from its own thread, all released at once; answers in body order."""
    return all_at_once([functools.partial(post_json, address, "/api/exchanges", body, headers) for body in bodies])


@contextmanager
def lowest_available(engine: Engine, account: uuid.UUID, currency: str) -> Iterator[list[Decimal]]:
    """Watch the balance from another connection while the block runs; yields the values seen."""
    seen: list[Decimal] = []
    done = threading.Event()

    def watch() -> None:
        with engine.connect() as conn:
            while not done.is_set():
                seen.append(
                    conn.execute(
                        select(balances.c.available).where(
                            balances.c.account_id == account, balances.c.currency == currency
                        )
                    ).scalar_one()
                )
                conn.rollback()  # a fresh snapshot for every read

    watcher = threading.Thread(target=watch, name="balance-watcher")
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def assert_no_overdraft(
    engine: Engine, account: uuid.UUID, answers: list[tuple[int, dict[str, Any]]], initial: Decimal, amount: Decimal
) -> None:
    accepted = [body for status, body in answers if status == 202]
    refused = [body for status, body in answers if status != 202]

    # Equal amounts and a serialising lock: refusals start exactly when the money runs out.
    assert len(accepted) == int(initial // amount)
    assert sum(Decimal(body["amount"]) for body in accepted) <= initial
    assert {status for status, _ in answers} <= {202, 409}
    for body in refused:
        assert body["error"]["code"] == "insufficient_funds"
        assert "amount" in body["error"]["fields"]
    assert len({body["id"] for body in accepted}) == len(accepted)

    with engine.connect() as conn:
        available, held = conn.execute(
            select(balances.c.available, balances.c.held).where(
                balances.c.account_id == account, balances.c.currency == "CAD"
            )
        ).one()
        rows = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (exchanges, outbox_messages, exchange_events)
        }
        held_by_exchanges = conn.execute(select(func.coalesce(func.sum(exchanges.c.amount), 0))).scalar_one()
        ids = {str(i) for i in conn.execute(select(exchanges.c.id)).scalars()}

    assert available + held == initial
    assert available >= 0
    assert held == len(accepted) * amount == held_by_exchanges
    assert rows == {"exchanges": len(accepted), "outbox_messages": len(accepted), "exchange_events": len(accepted)}
    assert ids == {body["id"] for body in accepted}


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_fifty_parallel_requests_never_hold_more_than_the_balance_on_postgresql(
    app: Flask, pg_engine: Engine, customer: ApiCustomer
) -> None:
    initial, amount, requests = Decimal("1000.00"), Decimal("37.00"), 50
    account = open_account(pg_engine, "Racer", {"CAD": initial}, customer_id=customer.id)
    body = {"account": str(account), "from_currency": "CAD", "to_currency": "USD", "amount": str(amount)}

    with serving(app) as address, lowest_available(pg_engine, account, "CAD") as seen:
        answers = race(address, [body] * requests, customer.headers)

    assert_no_overdraft(pg_engine, account, answers, initial, amount)
    assert seen and min(seen) >= 0


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_ten_parallel_requests_never_hold_more_than_the_balance_on_sqlite(
    app: Flask, sqlite_engine: Engine, customer: ApiCustomer
) -> None:
    # No balance watcher here: every SQLite transaction begins IMMEDIATE, so a polling
    # reader would only compete with the writers for the one write lock.
    initial, amount, requests = Decimal("1000.00"), Decimal("150.00"), 10
    account = open_account(sqlite_engine, "Racer", {"CAD": initial}, customer_id=customer.id)
    body = {"account": str(account), "from_currency": "CAD", "to_currency": "USD", "amount": str(amount)}

    with serving(app) as address:
        answers = race(address, [body] * requests, customer.headers)

    assert_no_overdraft(sqlite_engine, account, answers, initial, amount)


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_parallel_requests_on_different_accounts_do_not_refuse_each_other(
    app: Flask, pg_engine: Engine, customer: ApiCustomer
) -> None:
    # Each account can afford its own request: any refusal would be a locking bug
    # (a lock wider than the one balance row), not a lack of money.
    accounts = [open_account(pg_engine, f"Customer {i}", {"CAD": Decimal("50.00")}, customer_id=customer.id)
                for i in range(20)]
    bodies = [
        {"account": str(account), "from_currency": "CAD", "to_currency": "USD", "amount": "50.00"}
        for account in accounts
    ]

    with serving(app) as address:
        answers = race(address, bodies, customer.headers)

    assert [status for status, _ in answers] == [202] * len(accounts)
    assert [body["account"] for _, body in answers] == [str(account) for account in accounts]
