"""Composing and running the relay process: settings in, a running Relay out."""

from __future__ import annotations

import logging
import signal
from datetime import timedelta
from types import FrameType

import dramatiq
from prometheus_client import start_http_server
from sqlalchemy import Engine

from database import is_postgres, make_engine
from outbox.publisher import publisher_for
from outbox.relay import Relay, RelayConfig
from outbox.wakeup import ListenWaiter, PollWaiter, Waiter
from settings import Settings

log = logging.getLogger("outbox.daemon")


def relay_config(settings: Settings) -> RelayConfig:
    return RelayConfig(
        batch_size=settings.relay_batch_size,
        poll_interval_seconds=settings.relay_poll_interval_seconds,
        max_backoff_seconds=settings.relay_max_backoff_seconds,
        retention=timedelta(hours=settings.relay_retention_hours),
        coalesce_seconds=settings.relay_coalesce_ms / 1000,
    )


def build_relay(settings: Settings, engine: Engine, broker: dramatiq.Broker | None = None) -> Relay:
    """Redis gets pipelined batches; RabbitMQ and the embedded broker publish through `broker`."""
    if broker is None and not settings.broker_url.startswith(("redis://", "rediss://")):
        from jobs.broker import build_broker

        broker = build_broker(settings)
    waiter: Waiter = ListenWaiter(engine) if is_postgres(engine) else PollWaiter(engine)
    return Relay(engine, publisher_for(settings.broker_url, broker), relay_config(settings), waiter=waiter)


def run_daemon(settings: Settings, engine: Engine) -> None:
    """Run until SIGTERM or SIGINT; the batch in hand is committed before exiting."""
    if settings.embedded_broker:
        raise SystemExit("the relay daemon needs BROKER_URL (or REDIS_URL); `make run` relays in-process")
    if is_postgres(engine):
        # Its own small pool without pre-ping: a batch on a dead connection fails and is retried.
        engine = make_engine(settings.database_url, pool_size=2, max_overflow=2, pre_ping=False,
                             idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms)
    relay = build_relay(settings, engine)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping after the current batch", signal.Signals(signum).name)
        relay.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if settings.relay_metrics_port:
        start_http_server(settings.relay_metrics_port)
    try:
        relay.run()
    finally:
        relay.publisher.close()
        if relay.waiter is not None:
            relay.waiter.close()
