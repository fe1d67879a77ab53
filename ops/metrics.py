"""Prometheus metrics of the whole system, read from the database at scrape time.

Workers export Dramatiq's own metrics (step latency per actor, retries, errors) when
WORKER_METRICS_PORT is set; the relay exports its throughput when RELAY_METRICS_PORT is.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from domain.states import ExchangeState
from models.base import utcnow
from ops.dashboard import counts_by_state, open_findings_count
from outbox import store

S = ExchangeState


class SystemCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.engine.connect() as conn:
            counts = counts_by_state(conn)
            outbox = store.stats(conn, now=utcnow())
            findings = open_findings_count(conn)
        by_state = GaugeMetricFamily("fx_exchanges", "Exchanges by state", labels=["state"])
        for state, n in counts.items():
            by_state.add_metric([state], n)
        yield by_state
        yield GaugeMetricFamily("fx_compensations", "Exchanges refunded or being refunded",
                                value=counts.get(S.REFUNDED, 0) + counts.get(S.COMPENSATING, 0))
        yield GaugeMetricFamily("fx_outbox_unpublished", "Outbox rows not yet published", value=outbox.unpublished)
        yield GaugeMetricFamily("fx_outbox_oldest_unpublished_age_seconds", "Outbox lag",
                                value=outbox.oldest_unpublished_age_seconds or 0)
        yield GaugeMetricFamily("fx_outbox_published_last_minute", "Relay throughput",
                                value=outbox.published_last_minute)
        yield GaugeMetricFamily("fx_reconciliation_findings_open", "Ledger/bank mismatches", value=findings)


def system_registry(engine: Engine) -> CollectorRegistry:
    """A registry of its own, so a scrape reads only the system's gauges."""
    registry = CollectorRegistry()
    registry.register(SystemCollector(engine))
    return registry
