"""Entry point of `dramatiq jobs.worker`: the broker from the environment, then the actors."""

from __future__ import annotations

import observability
from jobs.broker import build_broker, install
from settings import Settings

settings = Settings.from_env()
observability.configure_logging(settings)
# Before the broker exists: Sentry's Dramatiq integration hooks brokers as they are built.
observability.init_sentry(settings, component="worker", dramatiq=True)
broker = install(build_broker(settings))
if settings.worker_metrics_port:
    import os

    from dramatiq.middleware.prometheus import Prometheus

    os.environ.setdefault("dramatiq_prom_port", str(settings.worker_metrics_port))
    broker.add_middleware(Prometheus())

import jobs.actors  # noqa: E402,F401  (actors bind to the broker installed above)
