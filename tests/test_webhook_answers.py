"""A receiver's answer cannot hold a worker or reach another customer: one deadline for the
whole call, at most 64 KB read, no cookie kept.

Real HTTP receivers in threads on 127.0.0.1 (allowed by name, as the tests' receivers are), the
real delivery client, and each attempt read back from the database as an operator sees it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from harness.wsgi import serving
from models import webhook_attempts
from services.accounts import open_account
from services.credentials import create_customer
from services.webhooks.delivery import MAX_ANSWER_BYTES, DeliveryConfig, webhook_session
from services.webhooks.endpoints import create_endpoint
from services.workflow import Workflow
from tests.conftest import ApiCustomer
from tests.ops_support import exchange_in
from tests.webhook_support import LOOPBACK, run_deliveries

#: A deadline short enough for a test, long beside a local receiver's answer.
DEADLINE = DeliveryConfig(queue="exchanges", schedule=(0.01,) * 7, timeout_seconds=1.0)
#: What the 300 MB receiver claims to send.
HUGE_BYTES = 300 * 1024 * 1024
#: The receiver may push this much into the socket's buffers before the client stops reading; far
#: below the answer, so a client that read it whole would be caught.
BUFFERED_AT_MOST = 32 * 1024 * 1024

WSGIApp = Callable[[dict, Callable], Iterator[bytes]]


@pytest.fixture
def account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Hooked Customer", {"CAD": Decimal("5000.00")}, customer_id=customer.id)


def attempts(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(webhook_attempts.c.response_snippet)
                                 .order_by(webhook_attempts.c.attempted_at)).scalars())


def test_an_answer_of_300_mb_is_cut_at_64_kb_and_the_attempt_fails_saying_so(
        engine: Engine, wf: Workflow, customer: ApiCustomer, account: uuid.UUID) -> None:
    sent = [0]

    def huge(environ: dict, start_response: Callable) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(HUGE_BYTES))])
        block = b"x" * 65536
        while sent[0] < HUGE_BYTES:
            sent[0] += len(block)
            yield block

    with serving(huge, name="huge-receiver") as url:
        create_endpoint(engine, customer.id, f"{url}/hooks", egress=LOOPBACK)
        exchange_in(wf, account, "completed")
        assert run_deliveries(engine, DEADLINE) == ["retrying"]
    assert attempts(engine) == [f"answer larger than {MAX_ANSWER_BYTES // 1024} KB: not read further (1 s, 64 KB)"]
    assert sent[0] < BUFFERED_AT_MOST, f"the receiver got {sent[0]} bytes away: the client read on"


def test_a_receiver_dripping_a_byte_at_a_time_is_cut_at_the_deadline_and_the_attempt_is_recorded(
        engine: Engine, wf: Workflow, customer: ApiCustomer, account: uuid.UUID) -> None:
    dripped = threading.Event()

    def drip(environ: dict, start_response: Callable) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100000")])
        for _ in range(100_000):  # each byte well inside the read timeout: only a deadline ends it
            dripped.set()
            yield b"."
            time.sleep(0.05)

    with serving(drip, name="drip-receiver") as url:
        create_endpoint(engine, customer.id, f"{url}/hooks", egress=LOOPBACK)
        exchange_in(wf, account, "completed")
        assert run_deliveries(engine, DEADLINE) == ["retrying"]
    assert dripped.is_set()
    assert attempts(engine) == ["no whole answer within the deadline (1 s, 64 KB)"]


def test_a_cookie_one_receiver_sets_never_rides_with_a_call_to_another(
        engine: Engine, wf: Workflow, customer: ApiCustomer, account: uuid.UUID) -> None:
    cookies: list[str | None] = []

    def planting(environ: dict, start_response: Callable) -> Iterator[bytes]:
        cookies.append(environ.get("HTTP_COOKIE"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "tracker=planted; Path=/")])
        return iter([b"ok"])

    other = create_customer(engine, "Another Customer")
    other_account = open_account(engine, "Another Customer", {"CAD": Decimal("5000.00")}, customer_id=other)
    http = webhook_session(LOOPBACK)  # one client for every customer, as in a worker
    with serving(planting, name="planting-receiver") as url:
        create_endpoint(engine, customer.id, f"{url}/a", egress=LOOPBACK)
        create_endpoint(engine, other, f"{url}/b", egress=LOOPBACK)
        exchange_in(wf, account, "completed")
        exchange_in(wf, other_account, "completed")
        assert run_deliveries(engine, DEADLINE, http) == ["delivered"] * 2
    assert cookies == [None, None]
    assert len(http.cookies) == 0
