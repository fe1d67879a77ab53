"""One Sentry trace from the web request through the relay to the worker's steps, and tagged step errors.

Sentry sends nothing over the network here: a transport of ours collects the envelopes.
The broker is a StubBroker built after `init_sentry`, so Sentry's Dramatiq integration
hooks it as it hooks the real worker's broker, and a Dramatiq Worker runs the real actors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
import sentry_sdk
from conftest import ApiCustomer, settings_for
from dramatiq import Worker
from flask import Flask
from sqlalchemy import Engine, func, select

import bootstrap
from bank.client import BankClient
from domain import states as machine
from domain.fx import DEFAULT_USD_VALUES, TableRateProvider
from domain.states import TERMINAL_STATES
from harness.waits import wait_until
from infra import observability
from models import outbox_messages
from outbox.publisher import TRACE_OPTION, BrokerPublisher
from outbox.relay import Relay
from services.accounts import open_account
from services.workflow import Workflow, WorkflowConfig
from tests.ops_support import BANK_TIMEOUT_SECONDS, bank_for
from tests.support.sentry_capture import CollectingTransport
from tests.workflow_support import state_of

QUEUE = "exchanges"
#: Generous bounds on waiting for the worker thread, so a hang fails instead of blocking.
JOIN_TIMEOUT_MS = 30_000
WAIT_SECONDS = 30
#: The happy path's messages: the debit runs in the quote's transaction, and the same worker then
#: runs the credit at once (complete and the receipt in its transaction), in the quote's trace.
STEP_ACTORS = [machine.QUOTE.actor]


def trace_of(event: dict[str, Any]) -> dict[str, Any]:
    return event["contexts"]["trace"]


class FlakyBank(BankClient):
    """The bank's answer to the first transfer is garbage our client cannot read."""

    def __init__(self, url: str) -> None:
        super().__init__(url, connect_timeout=BANK_TIMEOUT_SECONDS, read_timeout=BANK_TIMEOUT_SECONDS)
        self.garbled = 0

    def transfer(self, **kwargs: Any) -> Any:
        if self.garbled == 0:
            self.garbled += 1
            raise ValueError("bank answered 200 with a body that is not JSON: '<html>oops'")
        return super().transfer(**kwargs)


@dataclass
class System:
    """Web app, relay and worker in one process, wired as the embedded mode wires them."""

    engine: Engine
    app: Flask
    broker: dramatiq.Broker
    relay: Relay
    workflow: Workflow
    customer: ApiCustomer
    account: uuid.UUID

    def post_exchange(self, amount: str = "100.00") -> uuid.UUID:
        response = self.app.test_client().post("/api/exchanges", headers=self.customer.headers, json={
            "account": str(self.account), "from_currency": "CAD", "to_currency": "USD", "amount": amount})
        assert response.status_code == 202, response.get_json()
        return uuid.UUID(response.get_json()["id"])

    def relay_and_work(self) -> int:
        """Publish what the outbox holds, then wait until the worker has processed the queue."""
        published = self.relay.run_once().published
        self.broker.join(QUEUE, timeout=JOIN_TIMEOUT_MS)
        return published

    def run_until_done(self, exchange_id: uuid.UUID) -> str:
        """Relay and work, round after round (a handed-off step that failed is due again a lease
        later), until the exchange is in a final state with nothing left to publish."""

        def done() -> bool:
            self.relay_and_work()
            return state_of(self.engine, exchange_id) in TERMINAL_STATES and self.unpublished() == 0

        wait_until(done, WAIT_SECONDS, lambda: f"exchange {exchange_id} to finish "
                   f"(still {state_of(self.engine, exchange_id)}, {self.unpublished()} unpublished)")
        return state_of(self.engine, exchange_id)

    def unpublished(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(outbox_messages)
                                .where(outbox_messages.c.published_at.is_(None))).scalar_one()


def start_system(engine: Engine, app: Flask, customer: ApiCustomer, bank: BankClient,
                 lease: timedelta) -> Iterator[System]:
    previous_broker = dramatiq.broker.global_broker
    workflow = Workflow(engine, bank, TableRateProvider(DEFAULT_USD_VALUES), WorkflowConfig(lease=lease))
    # The broker is built after init_sentry: hooked by Sentry.
    broker = bootstrap.build_worker(settings_for(engine), workflow=workflow).broker
    broker.declare_queue(QUEUE)
    app.extensions["fx.bank"] = bank
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    account = open_account(engine, "Traced Customer", {"CAD": Decimal("1000.00")}, customer_id=customer.id)
    try:
        yield System(engine, app, broker, Relay(engine, BrokerPublisher(broker)), workflow, customer, account)
    finally:
        worker.stop()
        broker.close()
        dramatiq.broker.global_broker = previous_broker


@pytest.fixture
def system(sentry: CollectingTransport, engine: Engine, app: Flask, customer: ApiCustomer,
           bank_url: str) -> Iterator[System]:
    yield from start_system(engine, app, customer, bank_for(bank_url),
                            lease=timedelta(seconds=5))


def test_the_worker_continues_the_web_requests_trace(sentry: CollectingTransport, system: System) -> None:
    exchange_id = system.post_exchange()
    web = sentry.transaction("api.create_exchange")
    web_trace = trace_of(web)["trace_id"]
    with system.engine.connect() as conn:
        headers = conn.execute(select(outbox_messages.c.trace_headers)).scalar_one()
    # The request's trace is stored with its outbox message...
    assert headers["sentry-trace"].startswith(f"{web_trace}-{trace_of(web)['span_id']}-")
    assert f"sentry-trace_id={web_trace}" in headers["baggage"]

    assert system.relay_and_work() == 1

    # ...the relay publishes the message in a transaction of that trace...
    publish = sentry.transaction("publish quote_exchange")
    assert trace_of(publish)["trace_id"] == web_trace
    assert trace_of(publish)["parent_span_id"] == trace_of(web)["span_id"]
    # ...and the worker's transaction continues it, a child of the publish.
    quote = sentry.transaction("quote_exchange")
    assert trace_of(quote)["trace_id"] == web_trace
    assert trace_of(quote)["parent_span_id"] == trace_of(publish)["span_id"]
    assert quote["tags"]["exchange_id"] == str(exchange_id)
    assert quote["tags"]["step"] == "quote_exchange"
    assert state_of(system.engine, exchange_id) == "completed"  # every step ran behind the quote's message


def test_every_step_of_an_exchange_stays_in_the_web_requests_trace(
        sentry: CollectingTransport, system: System) -> None:
    exchange_id = system.post_exchange()

    assert system.run_until_done(exchange_id) == "completed"

    web_trace = trace_of(sentry.transaction("api.create_exchange"))["trace_id"]
    steps = {name: sentry.transaction(name) for name in STEP_ACTORS}
    assert {name: trace_of(t)["trace_id"] for name, t in steps.items()} == dict.fromkeys(STEP_ACTORS, web_trace)
    assert all(t["tags"]["exchange_id"] == str(exchange_id) for t in steps.values())
    assert sentry.errors() == []


def test_two_exchanges_relayed_together_each_stay_in_their_own_requests_trace(
        sentry: CollectingTransport, system: System) -> None:
    first, second = system.post_exchange("10.00"), system.post_exchange("20.00")
    requests = [t for t in sentry.transactions() if t["transaction"] == "api.create_exchange"]
    first_trace, second_trace = (trace_of(t)["trace_id"] for t in requests)
    assert first_trace != second_trace

    assert system.run_until_done(first) == "completed"
    assert system.run_until_done(second) == "completed"

    by_exchange: dict[str, set[str]] = {str(first): set(), str(second): set()}
    for t in sentry.transactions():
        if t["transaction"] in STEP_ACTORS:
            by_exchange[t["tags"]["exchange_id"]].add(trace_of(t)["trace_id"])
    assert by_exchange == {str(first): {first_trace}, str(second): {second_trace}}


def test_the_relay_hands_the_stored_trace_headers_to_the_message(
        sentry: CollectingTransport, system: System) -> None:
    system.post_exchange()
    seen: list[dict[str, str]] = []
    original = system.broker.enqueue

    def spy(message: dramatiq.Message[Any], **kwargs: Any) -> Any:
        result = original(message, **kwargs)
        seen.append(dict(message.options[TRACE_OPTION]))
        return result

    system.broker.enqueue = spy  # type: ignore[method-assign]
    system.relay_and_work()

    web_trace = trace_of(sentry.transaction("api.create_exchange"))["trace_id"]
    assert len(seen) == 1 and seen[0]["sentry-trace"].startswith(web_trace)


@pytest.fixture
def flaky_system(sentry: CollectingTransport, engine: Engine, app: Flask, customer: ApiCustomer,
                 bank_url: str) -> Iterator[System]:
    # A short lease, so the retry after the garbled answer can take the step over soon.
    yield from start_system(engine, app, customer, FlakyBank(bank_url), lease=timedelta(milliseconds=200))


def test_an_unexpected_error_in_a_step_reaches_sentry_tagged_with_the_exchange(
        sentry: CollectingTransport, flaky_system: System) -> None:
    exchange_id = flaky_system.post_exchange()
    web_trace = trace_of(sentry.transaction("api.create_exchange"))["trace_id"]

    # quote and debit run; the credit's bank call raises; Dramatiq retries it until it pays.
    assert flaky_system.run_until_done(exchange_id) == "completed"

    assert sentry.events_seen.wait(WAIT_SECONDS)
    (error,) = sentry.errors()
    assert error["tags"]["exchange_id"] == str(exchange_id)
    assert error["tags"]["step"] == "credit_exchange"
    (exception,) = error["exception"]["values"]
    assert exception["type"] == "ValueError" and "not JSON" in exception["value"]
    assert trace_of(error)["trace_id"] == web_trace
    assert error["contexts"]["dramatiq"]["data"]["kwargs"] == {"exchange_id": str(exchange_id)}
    assert len(flaky_system.workflow.bank.all_applied()) == 1


def test_continuing_a_rows_trace_leaves_the_relays_own_trace_alone(sentry: CollectingTransport) -> None:
    ambient = sentry_sdk.get_traceparent()
    row_trace = "a" * 32
    assert ambient is not None and not ambient.startswith(row_trace)

    with observability.continued_trace({"sentry-trace": f"{row_trace}-{'b' * 16}-1"}, "publish quote_exchange"):
        assert (sentry_sdk.get_traceparent() or "").startswith(row_trace)

    # The next row without headers, or an error the relay logs, is not filed under that row's trace.
    assert sentry_sdk.get_traceparent() == ambient
    assert trace_of(sentry.transaction("publish quote_exchange"))["trace_id"] == row_trace


def test_trace_headers_are_stored_only_from_inside_a_transaction(sentry: CollectingTransport) -> None:
    assert observability.current_trace_headers() is None
    with sentry_sdk.start_transaction(name="a step", op="queue.task") as transaction:
        headers = observability.current_trace_headers()
    assert headers is not None and headers["sentry-trace"].startswith(transaction.trace_id)
