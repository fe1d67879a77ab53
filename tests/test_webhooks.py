"""Signed webhooks with a real receiver process: every event arrives at least once, each one
verifies with the `standardwebhooks` package from PyPI and with the README's receiver, forged,
tampered and replayed calls are refused, and every attempt is on record for the customer."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import standardwebhooks
from conftest import ApiCustomer
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from harness.waits import wait_until
from models import outbox_messages, webhook_attempts, webhook_deliveries
from services.accounts import open_account
from services.webhooks import signing
from services.webhooks.delivery import DeliveryBusy, deliver
from services.webhooks.events import DELIVER_ACTOR
from services.workflow import Workflow
from tests.ops_support import events, exchange_in
from tests.webhook_support import FAST, RECEIVER_NETWORKS, Receiver, due_deliveries, receiver, run_deliveries
from tests.workflow_support import drive

# The receiver is a process of its own (tests/webhook_support.py).
pytestmark = pytest.mark.process


#: Bound on waiting for deliveries (their retries are due within a fraction of a second: FAST).
WAIT_SECONDS = 20.0


@pytest.fixture
def app_settings() -> dict[str, object]:
    return {"webhook_allowed_networks": RECEIVER_NETWORKS}


@pytest.fixture
def account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Hooked Customer", {"CAD": Decimal("5000.00")}, customer_id=customer.id)


def register(client: FlaskClient, url: str) -> dict[str, Any]:
    response = client.post("/api/webhook-endpoints", json={"url": url, "description": "tests"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def one_of_each(wf: Workflow, account: uuid.UUID) -> dict[str, uuid.UUID]:
    """An exchange for each event type, each brought there by its own steps."""
    made = {state: exchange_in(wf, account, state) for state in ("completed", "refunded", "failed",
                                                                 "needs_attention")}
    drive(wf, made["failed"])  # its receipt
    return made


def test_a_receiver_down_for_a_while_gets_every_event_once_and_each_verifies_with_standardwebhooks(
    client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID, tmp_path: Path
) -> None:
    with receiver(tmp_path) as hooks:
        endpoint = register(client, hooks.url)
        made = one_of_each(wf, account)
        for _ in range(3):  # the receiver is down: each event fails, and is retried
            wait_until(lambda: len(due_deliveries(engine)) == len(made), WAIT_SECONDS,
                       lambda: f"the {len(made)} retries to be due ({len(due_deliveries(engine))} are)")
            assert run_deliveries(engine) == ["retrying"] * len(made)
        hooks.start(endpoint["secret"])
        until_all_delivered(engine)

        kept = hooks.kept()
        by_type = {entry["event"]["type"]: entry for entry in kept}
        assert len(kept) == 4 and set(by_type) == {"exchange.completed", "exchange.refunded", "exchange.failed",
                                                   "exchange.needs_attention"}
        for state, exchange_id in made.items():
            entry = by_type[f"exchange.{state}"]
            assert entry["event"]["data"]["id"] == str(exchange_id)
            assert entry["event"]["data"]["state"] == state
            # The off-the-shelf library agrees with the receiver that the call is genuine.
            assert standardwebhooks.Webhook(endpoint["secret"]).verify(entry["body"], entry["headers"]) == \
                entry["event"]
        assert by_type["exchange.refunded"]["event"]["data"]["failure_reason"]
        assert "worker" not in by_type["exchange.refunded"]["body"]  # the customer's view, not ours

        # Down again for a while, then back: the next event waits for it, and nothing is kept twice.
        hooks.stop()
        later = exchange_in(wf, account, "completed")
        assert set(run_deliveries(engine)) == {"retrying"}
        hooks.start()
        until_all_delivered(engine)
        ids = [entry["event"]["data"]["id"] for entry in hooks.kept()]
        assert len(ids) == 5 and ids[-1] == str(later) and len(set(ids)) == 5


def until_all_delivered(engine: Engine) -> None:
    """Run the due deliveries, round after round, until every one is delivered."""

    def undelivered() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(webhook_deliveries)
                                .where(webhook_deliveries.c.status != "delivered")).scalar_one()

    def all_delivered() -> bool:
        run_deliveries(engine)
        return undelivered() == 0

    wait_until(all_delivered, WAIT_SECONDS, lambda: f"every delivery to be delivered ({undelivered()} not yet)",
               interval=0.02)


@pytest.fixture
def live(client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID,
         tmp_path: Path) -> Any:
    """A running receiver, its endpoint, and one completed exchange delivered to it."""
    with receiver(tmp_path) as hooks:
        endpoint = register(client, hooks.url)
        hooks.start(endpoint["secret"])
        exchange_in(wf, account, "completed")
        until_all_delivered(engine)
        yield hooks, endpoint


def test_a_tampered_body_a_forged_signature_and_an_old_timestamp_are_refused_by_the_receiver_and_the_library(
    live: tuple[Receiver, dict[str, Any]]
) -> None:
    hooks, endpoint = live
    genuine = hooks.kept()[0]
    body, headers = genuine["body"], genuine["headers"]
    tampered = body.replace('"completed"', '"refunded"', 1)
    forged_secret = signing.new_secret()
    old = int(time.time()) - 600
    calls = {
        "tampered body": (tampered, headers),
        "forged signature": (body, signing.headers([forged_secret], headers["webhook-id"], int(time.time()), body)),
        "old timestamp": (body, signing.headers([endpoint["secret"]], headers["webhook-id"], old, body)),
        "no signature": (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
    }
    for name, (data, sent) in calls.items():
        answer = requests.post(hooks.url, data=data.encode(), headers=sent, timeout=5)
        assert answer.status_code == 400, name
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(endpoint["secret"]).verify(data, sent)
    assert len(hooks.kept()) == 1  # nothing refused was kept


def test_every_attempt_is_listed_for_the_customer_and_a_replay_sends_the_same_event_again(
    client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID, tmp_path: Path
) -> None:
    with receiver(tmp_path) as hooks:
        endpoint = register(client, hooks.url)
        exchange_id = exchange_in(wf, account, "completed")
        assert run_deliveries(engine) == ["retrying"]  # down
        hooks.start(endpoint["secret"])
        until_all_delivered(engine)  # runs the retry once it is due

        listed = client.get(f"/api/webhook-endpoints/{endpoint['id']}/deliveries").get_json()["data"]
        assert len(listed) == 1
        delivery = listed[0]
        assert (delivery["event_type"], delivery["exchange"], delivery["status"]) == (
            "exchange.completed", str(exchange_id), "delivered")
        first, second = delivery["attempts"]
        assert first["status_code"] is None and first["response"].startswith("could not connect")
        assert second["status_code"] == 204 and second["latency_ms"] >= 0
        webhook_lines = [e for e in events(engine, exchange_id) if e.step == "webhook"]
        assert [e.outcome for e in webhook_lines] == ["webhook_retrying", "webhook_delivered"]

        replayed = client.post(f"/api/webhook-deliveries/{delivery['id']}/replay")
        assert replayed.status_code == 202 and replayed.get_json()["status"] == "pending"
        assert run_deliveries(engine) == ["delivered"]
        again = client.get(f"/api/webhook-endpoints/{endpoint['id']}/deliveries").get_json()["data"][0]
        assert [a["status_code"] for a in again["attempts"]] == [None, 204, 204]
        assert len(hooks.kept()) == 1  # the same webhook-id: the receiver keeps it once
        assert client.post(f"/api/webhook-deliveries/{uuid.uuid4()}/replay").status_code == 404


def test_a_delivery_gives_up_after_its_schedule_and_says_so_on_the_timeline(
    client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID, tmp_path: Path
) -> None:
    with receiver(tmp_path) as never_started:
        register(client, never_started.url)
        exchange_id = exchange_in(wf, account, "completed")
        outcomes: list[str] = []

        def given_up() -> bool:
            outcomes.extend(run_deliveries(engine))
            return "failed" in outcomes

        wait_until(given_up, WAIT_SECONDS, lambda: f"the delivery to be given up (so far {outcomes})", interval=0.015)
    assert outcomes == ["retrying"] * 7 + ["failed"]  # eight attempts: the first and seven retries
    with engine.connect() as conn:
        assert conn.execute(select(webhook_deliveries.c.status)).scalar_one() == "failed"
        assert conn.execute(select(func.count()).select_from(webhook_attempts)).scalar_one() == 8
        assert not conn.execute(select(outbox_messages).where(outbox_messages.c.actor == DELIVER_ACTOR,
                                                              outbox_messages.c.published_at.is_(None))).first()
    assert [e.outcome for e in events(engine, exchange_id) if e.step == "webhook"][-1] == "webhook_failed"


def test_a_duplicate_message_makes_no_second_attempt_and_an_attempt_in_flight_makes_it_wait(
    client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID, tmp_path: Path
) -> None:
    with receiver(tmp_path) as never_started:
        register(client, never_started.url)
    exchange_in(wf, account, "completed")
    with engine.connect() as conn:
        delivery_id = conn.execute(select(webhook_deliveries.c.id)).scalar_one()

    class Hanging(requests.Session):
        """A worker frozen mid-call: a second delivery of the message arrives meanwhile."""

        def post(self, *args: Any, **kwargs: Any) -> Any:
            with pytest.raises(DeliveryBusy):
                deliver(engine, requests.Session(), FAST, delivery_id)
            raise requests.ConnectionError("refused")

    patient = dataclasses.replace(FAST, schedule=(60.0,) * 7)
    assert deliver(engine, Hanging(), patient, delivery_id) == "retrying"
    assert deliver(engine, requests.Session(), patient, delivery_id) == "skipped"  # the retry is not due yet
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_attempts)).scalar_one() == 1


def test_after_a_rotation_each_call_carries_both_signatures_until_the_old_secret_expires(
    client: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID, tmp_path: Path
) -> None:
    with receiver(tmp_path) as old_only:
        endpoint = register(client, old_only.url)
        rotated = client.post(f"/api/webhook-endpoints/{endpoint['id']}/rotate-secret").get_json()
        assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"]
        old_only.start(endpoint["secret"])  # a receiver not yet switched over
        exchange_in(wf, account, "completed")
        until_all_delivered(engine)
        entry = old_only.kept()[0]
    assert len(entry["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated["secret"]):
        standardwebhooks.Webhook(secret).verify(entry["body"], entry["headers"])


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/x"}, "url"), ({"url": "/relative"}, "url"), ({}, "url"),
    ({"url": "https://example.com/" + "x" * 2000}, "url"), ({"url": "https://e.com", "events": []}, "events"),
    ({"url": "https://e.com", "description": "d" * 201}, "description"),
])
def test_a_bad_endpoint_is_refused_naming_the_field(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/api/webhook-endpoints", json=body)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    assert client.get("/api/webhook-endpoints").get_json() == {"data": []}


def test_endpoints_are_listed_without_their_secret_and_another_customer_cannot_see_or_touch_them(
    client: FlaskClient, app: Any, engine: Engine
) -> None:
    from services.credentials import Role, create_customer, issue_api_key

    endpoint = register(client, "https://example.com/hooks")
    listed = client.get("/api/webhook-endpoints").get_json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in json.dumps(listed)
    other = issue_api_key(engine, role=Role.CUSTOMER, label="o", customer_id=create_customer(engine, "Other"))
    stranger = app.test_client()
    stranger.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {other}"
    for call in (stranger.get, stranger.delete):
        assert call(f"/api/webhook-endpoints/{endpoint['id']}").status_code == 404
    assert stranger.post(f"/api/webhook-endpoints/{endpoint['id']}/rotate-secret").status_code == 404
    assert client.delete(f"/api/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert client.get(f"/api/webhook-endpoints/{endpoint['id']}").get_json()["disabled_at"]


def test_the_cli_registers_lists_rotates_shows_deliveries_and_replays_and_refuses_mistakes_in_one_line(
    app: Any, engine: Engine, customer: ApiCustomer, wf: Workflow, account: uuid.UUID
) -> None:
    cli = app.test_cli_runner()
    added = cli.invoke(args=["webhooks", "add", "--customer", str(customer.id), "--url", "http://127.0.0.1:9/h"])
    assert added.exit_code == 0, added.output
    endpoint_id, secret_line = added.output.split()[0], added.output.splitlines()[1]
    assert secret_line.startswith("secret: whsec_")
    assert endpoint_id in cli.invoke(args=["webhooks", "list"]).output
    rotated = cli.invoke(args=["webhooks", "rotate", endpoint_id])
    assert rotated.exit_code == 0 and rotated.output.splitlines()[1] != secret_line
    exchange_id = exchange_in(wf, account, "completed")
    assert run_deliveries(engine) == ["retrying"]  # nothing listens on port 9
    shown = cli.invoke(args=["webhooks", "deliveries", "--exchange", str(exchange_id)])
    assert "exchange.completed" in shown.output and "#1" in shown.output and "no answer" in shown.output
    delivery_id = shown.output.split()[0]
    assert cli.invoke(args=["webhooks", "replay", delivery_id]).output == f"replay of {delivery_id} queued\n"

    for args, says in (
        (["webhooks", "add", "--customer", str(uuid.uuid4()), "--url", "https://e.com"], "no customer"),
        (["webhooks", "add", "--customer", str(customer.id), "--url", "ftp://e.com"], "url: Must be"),
        (["webhooks", "rotate", str(uuid.uuid4())], "No such webhook endpoint."),
        (["webhooks", "replay", str(uuid.uuid4())], "No such webhook delivery."),
    ):
        refused = cli.invoke(args=args)
        assert refused.exit_code == 1, refused.output
        assert len(refused.output.strip().splitlines()) == 1 and says in refused.output
        assert "Traceback" not in refused.output


def test_the_operator_sees_each_delivery_on_the_exchange_page_and_can_replay_it_with_an_audit_entry(
    client: FlaskClient, ops: FlaskClient, engine: Engine, wf: Workflow, account: uuid.UUID
) -> None:
    import re

    register(client, "http://127.0.0.1:9/hooks")
    exchange_id = exchange_in(wf, account, "completed")
    patient = dataclasses.replace(FAST, schedule=(60.0,) * 7)  # its own retry is not due during the test
    assert run_deliveries(engine, patient) == ["retrying"]
    page = ops.get(f"/ops/exchanges/{exchange_id}").get_data(as_text=True)
    table = page[page.index('<table id="webhooks">'):]
    assert "exchange.completed" in table and "http://127.0.0.1:9/hooks" in table and "no answer" in table
    action = re.search(r'action="(/ops/webhook-deliveries/[0-9a-f-]+/replay)"', table)
    assert action is not None
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    assert ops.post(action.group(1)).status_code == 400  # no CSRF token: refused
    done = ops.post(action.group(1), data={"csrf_token": token.group(1)})
    assert done.status_code == 302
    replayed = [e for e in events(engine, exchange_id) if e.outcome == "webhook_replayed"]
    assert len(replayed) == 1 and replayed[0].detail["event"] == "exchange.completed"
    assert run_deliveries(engine, patient) == ["retrying"]  # sent again at once
