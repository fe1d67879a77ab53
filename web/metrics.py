"""Prometheus metrics of the whole system, read from the database at scrape time.

Workers export Dramatiq's own metrics (step latency per actor, retries, errors) when
WORKER_METRICS_PORT is set; the relay exports its throughput when RELAY_METRICS_PORT is.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from models import reconciliation_findings
from models.base import utcnow
from outbox import store
from services.operations import counts_by_state
from web.auth import operator_required

bp = Blueprint("metrics", __name__)


class SystemCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.engine.connect() as conn:
            counts = counts_by_state(conn)
            outbox = store.stats(conn, now=utcnow())
            findings = conn.execute(select(func.count()).select_from(reconciliation_findings)
                                    .where(reconciliation_findings.c.resolved_at.is_(None))).scalar_one()
        by_state = GaugeMetricFamily("fx_exchanges", "Exchanges by state", labels=["state"])
        for state, n in counts.items():
            by_state.add_metric([state], n)
        yield by_state
        yield GaugeMetricFamily("fx_compensations", "Exchanges refunded or being refunded",
                                value=counts.get("refunded", 0) + counts.get("compensating", 0))
        yield GaugeMetricFamily("fx_outbox_unpublished", "Outbox rows not yet published", value=outbox.unpublished)
        yield GaugeMetricFamily("fx_outbox_oldest_unpublished_age_seconds", "Outbox lag",
                                value=outbox.oldest_unpublished_age_seconds or 0)
        yield GaugeMetricFamily("fx_outbox_published_last_minute", "Relay throughput",
                                value=outbox.published_last_minute)
        yield GaugeMetricFamily("fx_reconciliation_findings_open", "Ledger/bank mismatches", value=findings)


@bp.get("/metrics")
@operator_required
def metrics() -> Response:
    registry = current_app.extensions.get("fx.metrics_registry")
    if registry is None:
        registry = CollectorRegistry()
        registry.register(SystemCollector(current_app.extensions["fx.engine"]))
        current_app.extensions["fx.metrics_registry"] = registry
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
