"""Liveness and readiness for load balancers and orchestrators: unauthenticated, cheap, and terse.

`/api/health` says the process answers. `/api/ready` says whether it can do its work: the
database answers, its schema is the one this code was built for, and the broker is reachable.
The answers name each check and its outcome in a word or two, never a host, port or traceback:
anyone can call them. Readiness is cached briefly, so a probe every second costs one check per
interval, not one per probe per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from infra.migrate import head_revision
from ops import broker as broker_view
from settings import Settings

bp = Blueprint("health", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

#: How long one readiness answer is reused.
READY_CACHE_SECONDS = 2.0
OK = "ok"


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(outcome in (OK, "embedded") for outcome in self.checks.values())


def check(engine: Engine, settings: Settings, head: str) -> Readiness:
    checks = {"database": "unreachable", "migrations": "unknown"}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            checks["database"] = OK
            current = _schema_revision(conn)
        checks["migrations"] = OK if current == head else f"schema at {current or 'nothing'}, code needs {head}"
    except SQLAlchemyError:
        pass  # what could not be checked stays "unreachable" / "unknown"
    if settings.embedded_broker:
        checks["broker"] = "embedded"
    else:
        checks["broker"] = OK if broker_view.reachable(settings.broker_url) else "unreachable"
    return Readiness(checks)


def _schema_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


class _Cached:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[float, Readiness] | None = None

    def get(self, compute: Callable[[], Readiness]) -> Readiness:
        with self._lock:
            if self._value is None or time.monotonic() - self._value[0] >= READY_CACHE_SECONDS:
                readiness = compute()
                if not readiness.ready:
                    log.warning("not ready: %s", readiness.checks)
                self._value = (time.monotonic(), readiness)
            return self._value[1]


@bp.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> Any:
    app = current_app
    cache = app.extensions.setdefault("fx.readiness", _Cached())
    if "fx.schema_head" not in app.extensions:
        app.extensions["fx.schema_head"] = head_revision()
    head = app.extensions["fx.schema_head"]
    readiness = cache.get(lambda: check(app.extensions["fx.engine"], app.extensions["fx.settings"], head))
    body = {"status": "ready" if readiness.ready else "not_ready", "checks": readiness.checks}
    if readiness.ready:
        return jsonify(body), 200
    # Asked again after the cache's life: the answer cannot change sooner.
    return jsonify(body), 503, {"Retry-After": str(max(1, round(READY_CACHE_SECONDS)))}
