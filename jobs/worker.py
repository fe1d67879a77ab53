"""Entry point of `dramatiq jobs.worker`: the worker's parts from the environment, built by bootstrap."""

from __future__ import annotations

import os

import bootstrap
from infra import observability
from jobs.broker import build_broker

settings = bootstrap.load_settings()
observability.configure_logging(settings)
# Before the broker exists: Sentry's Dramatiq integration hooks brokers as they are built.
observability.init_sentry(settings, component="worker", dramatiq=True)
broker = build_broker(settings)
if settings.worker_metrics_port:
    from dramatiq.middleware.prometheus import Prometheus

    os.environ.setdefault("dramatiq_prom_port", str(settings.worker_metrics_port))
    broker.add_middleware(Prometheus())
worker = bootstrap.build_worker(settings, broker=broker)
