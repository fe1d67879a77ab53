"""The naive design of shared/seeds, built honestly, for contrast in `python -m bench.chaos --design naive`.

    web:    gunicorn bench.naive:app       worker: dramatiq bench.naive

What the seeds describe, and what this does:
- the request checks the funds (a read, no hold), commits the exchange record, and THEN
  enqueues its jobs with plain `actor.send`: a quote, a debit (the ledger update) and a
  credit (the bank call), uncoordinated, in one go (`perform_later` x 3);
- no outbox, no step claim, no lease or fencing token, no reconciler;
- each job does its database work in one transaction and lets Dramatiq retry on an
  exception (same retry settings as ours: STEP_MAX_RETRIES, STEP_MIN/MAX_BACKOFF_MS);
- the credit skips an exchange that is already `completed` (the seeds' `if !order.completed?`),
  then calls the bank with a fresh Idempotency-Key per call (not derived from the exchange);
- the debit job just posts the debit (the seeds' `update_ledgers`), with no check.

Only so that the comparison is about the background jobs, the API honours the client's
Idempotency-Key (a retried POST finds the exchange it created). It uses the project's
schema and ledger helpers, so `services.invariants.check` judges both designs alike.
The state moves pending -> quoted (quote job) -> completed (credit job).
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from flask import Flask, jsonify, request
from sqlalchemy import Engine, insert, select, update

from bank.client import BankClient
from domain import ledger as postings
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider, make_quote
from infra.database import make_engine
from models import balances, exchanges
from models.base import utcnow
from services import ledger
from services.accounts import HOUSE_ACCOUNT_ID
from settings import Settings

log = logging.getLogger("bench.naive")

settings = Settings.from_env()
broker = RedisBroker(url=settings.broker_url, heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
                     maintenance_chance=settings.broker_maintenance_chance)
dramatiq.set_broker(broker)
rates = TableRateProvider(DEFAULT_USD_VALUES)
QUOTE_TTL = timedelta(seconds=settings.quote_ttl_seconds)

_engine: Engine | None = None
_bank: BankClient | None = None
_lock = threading.Lock()


def engine() -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            _engine = make_engine(settings.database_url, **settings.engine_options())
        return _engine


def bank() -> BankClient:
    global _bank
    with _lock:
        if _bank is None:
            _bank = BankClient(settings.bank_url, connect_timeout=settings.bank_connect_timeout_seconds,
                               read_timeout=settings.bank_read_timeout_seconds)
        return _bank


def job(fn: Any) -> dramatiq.Actor:
    return dramatiq.actor(fn, queue_name=settings.queue_name, max_retries=settings.step_max_retries,
                          min_backoff=settings.step_min_backoff_ms, max_backoff=settings.step_max_backoff_ms,
                          time_limit=settings.step_time_limit_ms)


class NotQuotedYet(Exception):
    """The credit ran before the quote (the jobs are not ordered); Dramatiq retries it."""


def _load(exchange_id: str) -> Any:
    with engine().connect() as conn:
        return conn.execute(select(exchanges).where(exchanges.c.id == uuid.UUID(exchange_id))).one()


@job
def naive_quote(exchange_id: str) -> None:
    row = _load(exchange_id)
    now = utcnow()
    q = make_quote(rates, row.from_currency, row.to_currency, row.amount, now, QUOTE_TTL)
    with engine().begin() as conn:
        conn.execute(update(exchanges).where(exchanges.c.id == row.id, exchanges.c.state == "pending")
                     .values(rate=q.rate, to_amount=q.to_amount, quote_expires_at=q.expires_at, state="quoted",
                             updated_at=now))


@job
def naive_debit(exchange_id: str) -> None:
    row = _load(exchange_id)
    now = utcnow()
    with engine().begin() as conn:
        conn.execute(update(balances)
                     .where(balances.c.account_id == row.account_id, balances.c.currency == row.from_currency)
                     .values(available=balances.c.available - row.amount, updated_at=now))
        ledger.post(conn, postings.debit(row.account_id, HOUSE_ACCOUNT_ID, row.from_currency, row.amount),
                    exchange_id=row.id, now=now)


@job
def naive_credit(exchange_id: str) -> None:
    row = _load(exchange_id)
    if row.state == "completed":
        return
    if row.to_amount is None:
        raise NotQuotedYet(exchange_id)
    bank().transfer(key=str(uuid.uuid4()), reference=exchange_id, account=str(row.account_id),
                    currency=row.to_currency, amount=row.to_amount)
    now = utcnow()
    with engine().begin() as conn:
        ledger.add_available(conn, row.account_id, row.to_currency, row.to_amount, now)
        ledger.post(conn, postings.credit(row.account_id, HOUSE_ACCOUNT_ID, row.to_currency, row.to_amount),
                    exchange_id=row.id, now=now)
        conn.execute(update(exchanges).where(exchanges.c.id == row.id).values(state="completed", updated_at=now))


# --- the web side ----------------------------------------------------------------------------


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/api/exchanges")
    def create_exchange() -> Any:
        key = request.headers.get("Idempotency-Key")
        body = request.get_json(silent=True) or {}
        try:
            account_id = uuid.UUID(str(body["account"]))
            source, target = str(body["from_currency"]), str(body["to_currency"])
            amount = Decimal(str(body["amount"]))
        except (KeyError, ValueError, InvalidOperation):
            return jsonify(error="account, from_currency, to_currency and amount are required"), 422
        with engine().begin() as conn:
            if key:
                earlier = conn.execute(select(exchanges.c.id).where(
                    exchanges.c.account_id == account_id, exchanges.c.idempotency_key == key)).scalar()
                if earlier is not None:
                    return jsonify(id=str(earlier)), 202
            available = conn.execute(select(balances.c.available).where(
                balances.c.account_id == account_id, balances.c.currency == source)).scalar()
            if available is None or available < amount:
                return jsonify(error="insufficient funds"), 409
            exchange_id, now = uuid.uuid4(), utcnow()
            conn.execute(insert(exchanges), {
                "id": exchange_id, "account_id": account_id, "from_currency": source, "to_currency": target,
                "amount": amount, "state": "pending", "attempt": 0, "claim_token": 0, "outcome_unknown": False,
                "idempotency_key": key, "created_at": now, "updated_at": now,
            })
        # After the commit, as in the seeds: if this process dies or Redis is away here,
        # the exchange exists and some of its jobs never will.
        naive_quote.send(str(exchange_id))
        naive_debit.send(str(exchange_id))
        naive_credit.send(str(exchange_id))
        return jsonify(id=str(exchange_id)), 202

    @app.get("/api/exchanges/<uuid:exchange_id>")
    def get_exchange(exchange_id: uuid.UUID) -> Any:
        with engine().connect() as conn:
            row = conn.execute(select(exchanges.c.id, exchanges.c.state).where(exchanges.c.id == exchange_id)).first()
        if row is None:
            return jsonify(error="no such exchange"), 404
        return jsonify(id=str(row.id), state=row.state)

    return app


def __getattr__(name: str) -> Any:
    # `gunicorn bench.naive:app` builds the app; `dramatiq bench.naive` never does.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
