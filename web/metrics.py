"""`/metrics`: the system's Prometheus gauges (ops/metrics.py), for operators."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, current_app
from prometheus_client import generate_latest

from ops.metrics import system_registry
from web.auth import operator_required

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@operator_required
def metrics() -> Response:
    registry = current_app.extensions.get("fx.metrics_registry")
    if registry is None:
        settings = current_app.extensions["fx.settings"]
        registry = current_app.extensions["fx.metrics_registry"] = system_registry(
            current_app.extensions["fx.engine"], stuck_after=timedelta(seconds=settings.stuck_after_seconds),
            dead_after=timedelta(seconds=settings.process_dead_after_seconds), broker_url=settings.broker_url,
            queue=settings.queue_name)
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
