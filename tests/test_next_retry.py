"""The next retry time an operator sees is the broker's: a real Dramatiq worker on Redis retries a
credit the bank refused, and the time its Retries middleware chose is on the exchange and its page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

import bootstrap
from app import create_app
from domain import states as machine
from harness.queues import forget_queue
from harness.waits import wait_until
from models.base import utcnow
from services.accounts import open_account
from services.workflow import Workflow
from tests.conftest import settings_for
from tests.ops_support import exchange_in, row_of
from tests.support.workers import fresh_queue, running_worker
from tests.workflow_support import bank_server, run_step

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Long enough that the retry is still waiting in the broker while the test looks.
MIN_BACKOFF_MS, MAX_BACKOFF_MS = 60_000, 120_000
WAIT_SECONDS = 30.0


@dataclass
class Retrying:
    wf: Workflow
    ops: FlaskClient
    exchange_id: uuid.UUID
    sent_at: datetime


@pytest.fixture
def retrying(pg_engine: Engine, tmp_path: Path) -> Iterator[Retrying]:
    broker_url, queue = fresh_queue("retry-clock")
    with bank_server(tmp_path) as bank_url:
        settings = settings_for(pg_engine, broker_url=broker_url, queue_name=queue, bank_url=bank_url,
                                step_min_backoff_ms=MIN_BACKOFF_MS, step_max_backoff_ms=MAX_BACKOFF_MS)
        wf = bootstrap.build_workflow(settings, pg_engine, bootstrap.build_bank(settings))
        try:
            with running_worker(settings, wf) as parts:
                account = open_account(pg_engine, "Retried", {"CAD": Decimal("1000.00")})
                exchange_id = exchange_in(wf, account, "debited")
                wf.bank.set_faults(down=True)
                sent_at = utcnow()
                parts.actors[machine.CREDIT.actor].send(str(exchange_id), 0)
                wait_until(lambda: row_of(pg_engine, exchange_id).next_attempt_at is not None, WAIT_SECONDS,
                           "the retry's time on the exchange")
                app = create_app(settings)
                app.extensions["fx.engine"].dispose()
                app.extensions["fx.engine"] = pg_engine
                yield Retrying(wf, app.test_client(), exchange_id, sent_at)
        finally:
            wf.bank.reset_faults()
            forget_queue(broker_url, queue)


def test_a_retried_step_shows_when_the_broker_will_deliver_it_next(retrying: Retrying) -> None:
    row = row_of(retrying.wf.engine, retrying.exchange_id)
    assert (row.state, row.step, row.attempt) == ("debited", "credit", 1)
    # Dramatiq's first backoff (twice the minimum, jittered, over the cap) lies in 50-100 % of the cap.
    assert retrying.sent_at + timedelta(milliseconds=MAX_BACKOFF_MS / 2) <= row.next_attempt_at
    assert row.next_attempt_at <= utcnow() + timedelta(milliseconds=MAX_BACKOFF_MS)
    shown = row.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"next retry at {shown}" in retrying.ops.get(f"/ops/exchanges/{retrying.exchange_id}").get_data(as_text=True)
    assert shown in retrying.ops.get(f"/ops/search?q={row.account_id}").get_data(as_text=True)


def test_the_next_retry_time_goes_once_the_retry_runs(retrying: Retrying) -> None:
    retrying.wf.bank.reset_faults()
    run_step(retrying.wf, machine.CREDIT.actor, retrying.exchange_id)  # the retry, delivered early
    row = row_of(retrying.wf.engine, retrying.exchange_id)
    assert (row.state, row.next_attempt_at) == ("completed", None)  # the credit commits with complete
