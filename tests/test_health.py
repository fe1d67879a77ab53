"""Liveness and readiness: unauthenticated, terse, and honest about which dependency is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from app import create_app
from infra.migrate import head_revision
from settings import Settings
from tests.conftest import REDIS_URL, settings_for
from web import health

#: Nothing listens on port 1.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def fresh_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test asks once: no answer cached by another test's app is reused (each app has its own anyway).
    monkeypatch.setattr(health, "READY_CACHE_SECONDS", 0.0)


def test_health_answers_without_an_api_key_and_touches_nothing(tmp_path: Path) -> None:
    # A database that does not exist: liveness must not depend on it.
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'missing' / 'fx.db'}"))
    response = app.test_client().get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_on_a_migrated_database_with_the_embedded_broker(app: Flask) -> None:
    response = app.test_client().get("/api/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready",
                                   "checks": {"database": "ok", "migrations": "ok", "broker": "embedded"}}


def test_ready_with_a_reachable_redis_broker(engine: Engine) -> None:
    app = create_app(settings_for(engine, broker_url=REDIS_URL))
    body = app.test_client().get("/api/ready").get_json()
    assert body["checks"]["broker"] == "ok" and body["status"] == "ready"


def test_not_ready_when_the_broker_is_unreachable_and_the_answer_names_no_host_or_port(engine: Engine) -> None:
    app = create_app(settings_for(engine, broker_url=DEAD_REDIS))
    response = app.test_client().get("/api/ready")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert body == {"status": "not_ready", "checks": {"database": "ok", "migrations": "ok", "broker": "unreachable"}}
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_not_ready_on_a_database_that_was_never_migrated(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    response = app.test_client().get("/api/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "migrations": f"schema at nothing, code needs "
                                             f"{head_revision()}", "broker": "embedded"}


def test_not_ready_on_a_database_behind_the_code(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    app = create_app(settings_for(engine))
    try:
        body = app.test_client().get("/api/ready").get_json()
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()})
    assert body["status"] == "not_ready"
    assert body["checks"]["migrations"] == f"schema at 0001, code needs {head_revision()}"


def test_not_ready_when_the_database_does_not_answer() -> None:
    # Nothing listens on port 1: the database is unreachable, so the schema cannot be known.
    app = create_app(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/fx?connect_timeout=1"))
    response = app.test_client().get("/api/ready")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "unreachable", "migrations": "unknown", "broker": "embedded"}
    assert ":1" not in response.get_data(as_text=True)


def test_ready_answers_are_reused_for_a_short_while(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "READY_CACHE_SECONDS", 3600.0)
    calls = []
    real = health.check
    monkeypatch.setattr(health, "check", lambda *args: calls.append(1) or real(*args))
    client = app.test_client()
    for _ in range(5):
        assert client.get("/api/ready").status_code == 200
    assert len(calls) == 1
