"""Dead letters an operator can act on, and the broker as the broker says it is (real Redis, real actors).

Poison messages are made the honest way: the real actors run in a Dramatiq worker on a Redis
broker with no retries, and fail (a message naming no exchange; a step whose commit raises).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from app import create_app
from domain import states as machine
from harness.queues import forget_queue
from harness.waits import wait_until
from models import operator_actions, outbox_messages
from ops import dead_letters
from outbox import failpoints
from services.accounts import open_account
from services.workflow import Workflow
from tests.conftest import settings_for
from tests.ops_support import events, exchange_in, make_workflow, row_of
from tests.support.browser import dump_dom, screenshot, served
from tests.support.metrics import sample
from tests.support.workers import fresh_queue, running_worker
from tests.workflow_support import bank_server, run_step

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_SECONDS = 30.0


@dataclass
class Poisoned:
    wf: Workflow
    ops: FlaskClient
    broker_url: str
    queue: str
    exchange_id: uuid.UUID
    letters: dict[str, dead_letters.DeadLetter]


def letters_now(broker_url: str, queue: str) -> list[dead_letters.DeadLetter]:
    dlq = dead_letters.DeadLetterQueue(broker_url, queue)
    try:
        return dlq.newest(50)
    finally:
        dlq.close()


@pytest.fixture
def poisoned(pg_engine: Engine, tmp_path: Path) -> Iterator[Poisoned]:
    broker_url, queue = fresh_queue("dead")
    with bank_server(tmp_path) as bank_url:
        wf = make_workflow(pg_engine, bank_url)
        settings = settings_for(pg_engine, broker_url=broker_url, queue_name=queue, step_max_retries=0,
                                credit_max_attempts=1, bank_url=bank_url)
        with running_worker(settings, wf) as parts:
            account = open_account(pg_engine, "Poisoned", {"CAD": Decimal("1000.00")})
            exchange_id = exchange_in(wf, account, "quoted")
            failpoints.load("step.debit.before_commit=raise")
            try:
                parts.actors[machine.DEBIT.actor].send("not-a-uuid")
                parts.actors[machine.DEBIT.actor].send(str(exchange_id))
                wait_until(lambda: len(letters_now(broker_url, queue)) == 2, WAIT_SECONDS, "two dead letters")
            finally:
                failpoints.load("")
        app = create_app(settings)
        app.extensions["fx.engine"].dispose()
        app.extensions["fx.engine"] = pg_engine
        letters = {("bad" if d.exchange_uuid is None else "real"): d for d in letters_now(broker_url, queue)}
        try:
            yield Poisoned(wf, app.test_client(), broker_url, queue, exchange_id, letters)
        finally:
            forget_queue(broker_url, queue)


def audit(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.action, r.subject) for r in conn.execute(select(operator_actions).order_by(operator_actions.c.id))]


def test_each_dead_letter_shows_its_actor_arguments_attempts_and_error(poisoned: Poisoned) -> None:
    real, bad = poisoned.letters["real"], poisoned.letters["bad"]
    assert (real.actor, real.args, real.retries) == (machine.DEBIT.actor, [str(poisoned.exchange_id)], 1)
    assert real.last_error and real.last_error.startswith("outbox.failpoints.InjectedFault")
    page = poisoned.ops.get(f"/ops/dead-letters/{real.redis_id}").get_data(as_text=True)
    assert "InjectedFault" in page and 'id="traceback"' in page and machine.DEBIT.actor in page
    assert str(poisoned.exchange_id) in page and "attempts 1" in page

    dashboard = poisoned.ops.get("/ops/").get_data(as_text=True)
    section = dashboard[dashboard.index("<h2>Dead-lettered messages</h2>"):]
    assert "not-a-uuid" in section and "/ops/exchanges/not-a-uuid" not in section
    assert f"/ops/dead-letters/{bad.redis_id}" in section
    assert "badly formed hexadecimal UUID string" in section  # the last error, on the list
    # The failure is on the exchange's timeline too, not only in the worker's log.
    assert ("debit", "error") in [(e.step, e.outcome) for e in events(poisoned.wf.engine, poisoned.exchange_id)]


def test_the_broker_view_and_metrics_count_what_the_broker_holds(poisoned: Poisoned) -> None:
    assert sample(poisoned.ops, "fx_broker_up") == 1
    assert sample(poisoned.ops, "fx_dead_letters") == 2
    assert sample(poisoned.ops, "fx_broker_messages", kind="dead", queue=poisoned.queue) == 2
    assert sample(poisoned.ops, "fx_broker_messages", kind="ready", queue=poisoned.queue) == 0


def test_a_letter_naming_no_exchange_cannot_be_replayed_but_can_be_deleted_and_that_is_audited(
        poisoned: Poisoned) -> None:
    bad = poisoned.letters["bad"]
    refused = poisoned.ops.post(f"/api/ops/dead-letters/{bad.redis_id}/replay")
    assert refused.status_code == 409 and "nothing to replay" in refused.get_json()["error"]["message"]

    deleted = poisoned.ops.post(f"/api/ops/dead-letters/{bad.redis_id}/delete")

    assert deleted.status_code == 200, deleted.get_json()
    assert [d.message_id for d in letters_now(poisoned.broker_url, poisoned.queue)] == [
        poisoned.letters["real"].message_id]
    assert audit(poisoned.wf.engine) == [("delete_dead_letter", f"message {bad.message_id}")]
    assert poisoned.ops.post(f"/api/ops/dead-letters/{bad.redis_id}/delete").status_code == 404


def test_a_replayed_letter_sends_the_step_again_through_the_outbox_and_the_exchange_moves_on(
        poisoned: Poisoned) -> None:
    real = poisoned.letters["real"]

    replayed = poisoned.ops.post(f"/api/ops/dead-letters/{real.redis_id}/replay")

    assert replayed.status_code == 200, replayed.get_json()
    with poisoned.wf.engine.connect() as conn:
        message = conn.execute(select(outbox_messages).order_by(outbox_messages.c.created_at.desc())).first()
    assert message.actor == machine.DEBIT.actor and message.payload == {"exchange_id": str(poisoned.exchange_id)}
    assert real.message_id not in {d.message_id for d in letters_now(poisoned.broker_url, poisoned.queue)}
    notes = [(e.step, e.outcome) for e in events(poisoned.wf.engine, poisoned.exchange_id)]
    assert ("operator", "dead_letter_replayed") in notes
    assert audit(poisoned.wf.engine) == [("replay_dead_letter", f"message {real.message_id}")]
    run_step(poisoned.wf, message.actor, poisoned.exchange_id)  # the relay and a worker would do this
    assert row_of(poisoned.wf.engine, poisoned.exchange_id).state == "debited"
    assert sample(poisoned.ops, "fx_dead_letters") == 1


def test_bulk_delete_of_one_actor_takes_only_that_actors_letters(poisoned: Poisoned) -> None:
    response = poisoned.ops.post("/api/ops/dead-letters/all/delete", json={"actor": "send_receipt"})
    assert response.get_json()["result"] == "delete: 0 done"
    response = poisoned.ops.post("/api/ops/dead-letters/all/delete", json={"actor": machine.DEBIT.actor})
    assert response.get_json()["result"] == "delete: 2 done"
    assert letters_now(poisoned.broker_url, poisoned.queue) == []


def test_a_letter_whose_exchange_has_ended_is_marked_resolved(wf: Workflow, funded_account: uuid.UUID) -> None:
    done = exchange_in(wf, funded_account, "completed")
    letter = dead_letters.DeadLetter("r1", "m1", machine.CREDIT.actor, [], {"exchange_id": str(done)},
                                     datetime.now(UTC), 0, None)
    (seen,) = dead_letters.with_states(wf.engine, [letter])
    assert seen.resolved and seen.exchange_state == "completed"


def test_with_the_broker_unreachable_the_page_and_metrics_say_unknown_not_zero(engine: Engine) -> None:
    app = create_app(settings_for(engine, broker_url="redis://127.0.0.1:1/0"))
    client = app.test_client()
    page = client.get("/ops/").get_data(as_text=True)
    assert 'id="broker-down"' in page and "dead-lettered<b>unknown</b>" in page
    assert sample(client, "fx_broker_up") == 0
    assert sample(client, "fx_dead_letters") is None


@pytest.mark.browser
def test_a_dead_letter_renders_in_a_browser_with_its_traceback_and_actions(poisoned: Poisoned, tmp_path: Path) -> None:
    real = poisoned.letters["real"]
    with served(poisoned.ops.application) as url:
        page = f"{url}/ops/dead-letters/{real.redis_id}"
        dom = dump_dom(tmp_path, page)
        traceback = re.search(r'<pre class="detail" id="traceback">(.*?)</pre>', dom, re.S)
        assert traceback is not None and "InjectedFault" in traceback.group(1)
        assert "replay" in dom and "delete" in dom and str(poisoned.exchange_id) in dom
        assert screenshot(tmp_path, page, "dead-letter.png").exists()
