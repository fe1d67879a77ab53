"""Prometheus metrics of the whole system, read from the database at scrape time.

Workers export Dramatiq's own metrics (step latency per actor, retries, errors) when
WORKER_METRICS_PORT is set; the relay exports its throughput when RELAY_METRICS_PORT is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from domain.states import ExchangeState
from models.base import utcnow
from ops import broker, checks
from ops.dashboard import counts_by_state, open_findings_count, stuck_counts
from ops.processes import alive_by_role, processes
from outbox import store

S = ExchangeState


class SystemCollector(Collector):
    def __init__(self, engine: Engine, *, stuck_after: timedelta, dead_after: timedelta, broker_url: str = "",
                 queue: str = "exchanges") -> None:
        self.engine = engine
        self.broker_url = broker_url
        self.queue = queue
        self.stuck_after = stuck_after
        self.dead_after = dead_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        with self.engine.connect() as conn:
            counts = counts_by_state(conn)
            stuck = stuck_counts(conn, older_than=self.stuck_after, now=now)
            outbox = store.stats(conn, now=now)
            findings = open_findings_count(conn)
            alive = alive_by_role(processes(conn, dead_after=self.dead_after, now=now))
            bank_check = checks.state_of(conn, checks.BANK_COMPARE)
        view = broker.read(self.broker_url, self.queue)
        yield GaugeMetricFamily("fx_broker_up", "1 if the broker could be read at this scrape", value=int(view.up))
        if view.dead_letters is not None:  # unknown when the broker is down: absent, never 0
            yield GaugeMetricFamily("fx_dead_letters", "Messages Dramatiq gave up on", value=view.dead_letters)
        queued = GaugeMetricFamily("fx_broker_messages", "Messages in the broker per queue and kind",
                                   labels=["queue", "kind"])
        for q in view.queues:
            for kind, n in (("ready", q.ready), ("delayed", q.delayed), ("in_flight", q.in_flight), ("dead", q.dead)):
                if n is not None:
                    queued.add_metric([q.name, kind], n)
        yield queued
        yield _labelled("fx_exchanges_stuck", "Open exchanges with no step progress past STUCK_AFTER_SECONDS",
                        "state", stuck)
        yield _labelled("fx_processes_alive", "Processes whose heartbeat is younger than PROCESS_DEAD_AFTER_SECONDS",
                        "role", alive)
        yield GaugeMetricFamily("fx_reconciler_last_bank_compare_timestamp_seconds",
                                "When the reconciler last compared ledger and bank to the end (0: never)",
                                value=bank_check.last_success_at.timestamp()
                                if bank_check and bank_check.last_success_at else 0)
        yield GaugeMetricFamily("fx_reconciler_bank_compare_ok",
                                "1 if the last ledger/bank comparison ran to the end, 0 if it could not",
                                value=1 if bank_check and bank_check.ok else 0)
        yield _labelled("fx_exchanges", "Exchanges by state", "state", counts)
        yield GaugeMetricFamily("fx_compensations", "Exchanges refunded or being refunded",
                                value=counts.get(S.REFUNDED, 0) + counts.get(S.COMPENSATING, 0))
        yield GaugeMetricFamily("fx_outbox_unpublished", "Outbox rows not yet published", value=outbox.unpublished)
        yield GaugeMetricFamily("fx_outbox_oldest_unpublished_age_seconds", "Outbox lag",
                                value=outbox.oldest_unpublished_age_seconds or 0)
        yield GaugeMetricFamily("fx_outbox_published_last_minute", "Relay throughput",
                                value=outbox.published_last_minute)
        yield GaugeMetricFamily("fx_reconciliation_findings_open", "Ledger/bank mismatches", value=findings)


def _labelled(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, n in values.items():
        family.add_metric([key], n)
    return family


def system_registry(engine: Engine, *, stuck_after: timedelta, dead_after: timedelta, broker_url: str = "",
                    queue: str = "exchanges") -> CollectorRegistry:
    """A registry of its own, so a scrape reads only the system's gauges."""
    registry = CollectorRegistry()
    registry.register(SystemCollector(engine, stuck_after=stuck_after, dead_after=dead_after, broker_url=broker_url,
                                      queue=queue))
    return registry
