"""A customer's endpoints are bounded: at most WEBHOOK_MAX_ENDPOINTS live ones, never two at one
URL, and racing registrations cannot slip past the cap (PostgreSQL locks the customer's row)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from models import webhook_endpoints
from tests.conftest import ApiCustomer
from tests.support.race import all_at_once
from tests.webhook_support import RECEIVER_NETWORKS

CAP = 3


@pytest.fixture
def app_settings() -> dict[str, object]:
    return {"webhook_allowed_networks": RECEIVER_NETWORKS, "webhook_max_endpoints": CAP}


def register(client: FlaskClient, url: str) -> Any:
    return client.post("/api/webhook-endpoints", json={"url": url})


def live(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(webhook_endpoints)
                            .where(webhook_endpoints.c.disabled_at.is_(None))).scalar_one()


def test_past_the_cap_a_registration_is_a_422_naming_url_and_disabling_one_frees_a_place(
        client: FlaskClient, engine: Engine) -> None:
    made = [register(client, f"http://127.0.0.1:9/hooks/{n}") for n in range(CAP)]
    assert [r.status_code for r in made] == [201] * CAP
    refused = register(client, "http://127.0.0.1:9/hooks/one-more")
    assert refused.status_code == 422
    assert refused.get_json()["error"]["fields"]["url"] == [
        f"You have {CAP} endpoints, the most allowed: disable one before adding another."]
    assert live(engine) == CAP
    assert client.delete(f"/api/webhook-endpoints/{made[0].get_json()['id']}").status_code == 204
    assert register(client, "http://127.0.0.1:9/hooks/one-more").status_code == 201


def test_the_same_url_twice_is_refused_but_another_customer_and_a_disabled_one_do_not_count(
        app: Flask, client: FlaskClient, engine: Engine, customer: ApiCustomer) -> None:
    from services.credentials import Role, create_customer, issue_api_key

    first = register(client, "http://127.0.0.1:9/hooks")
    again = register(client, "http://127.0.0.1:9/hooks")
    assert again.status_code == 422
    assert "already have an endpoint at this URL" in again.get_json()["error"]["fields"]["url"][0]
    other = create_customer(engine, "Other Customer")
    stranger = app.test_client()
    stranger.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {issue_api_key(engine, role=Role.CUSTOMER, label='other', customer_id=other)}")
    assert register(stranger, "http://127.0.0.1:9/hooks").status_code == 201
    assert client.delete(f"/api/webhook-endpoints/{first.get_json()['id']}").status_code == 204
    assert register(client, "http://127.0.0.1:9/hooks").status_code == 201


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_twenty_racing_registrations_leave_exactly_the_cap_live(
        app: Flask, pg_engine: Engine, customer: ApiCustomer) -> None:
    def sender(n: int) -> Callable[[], int]:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = customer.headers["Authorization"]
        return lambda: register(client, f"http://127.0.0.1:9/race/{n}").status_code

    statuses = all_at_once([sender(n) for n in range(20)])
    assert sorted(statuses) == [201] * CAP + [422] * (20 - CAP)
    assert live(pg_engine) == CAP
