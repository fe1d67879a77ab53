"""The outbox relay: run it (the Procfile's `relay:`), or print its status."""

from __future__ import annotations

import click
from flask import Flask

import bootstrap
from cli.context import engine, settings
from models.base import utcnow
from ops.processes import ProcessRole
from outbox.daemon import run_daemon
from outbox.store import stats


def register(app: Flask) -> None:
    @app.cli.group("relay")
    def relay_group() -> None:
        """The outbox relay: publish outbox messages to the broker."""

    @relay_group.command("run")
    def relay_run() -> None:
        """Run the relay daemon until SIGTERM/SIGINT (the Procfile's `relay:`)."""
        config = settings()
        if config.embedded_broker:
            raise click.ClickException("the relay daemon needs BROKER_URL (or REDIS_URL); "
                                       "`make run` relays in-process")
        engine = bootstrap.build_engine(config, bootstrap.Role.RELAY)
        relay = bootstrap.build_relay(config, engine)
        heartbeat = bootstrap.build_heartbeat(config, engine, ProcessRole.RELAY, holding=lambda: {
            "active": relay.leadership is None or relay.leadership.leads}).start()
        try:
            run_daemon(relay, metrics_port=config.relay_metrics_port)
        finally:
            heartbeat.stop()

    @relay_group.command("status")
    def relay_status() -> None:
        """Unpublished count, oldest unpublished age and publish rate of the outbox."""
        with engine().connect() as conn:
            s = stats(conn, now=utcnow())
        age = "-" if s.oldest_unpublished_age_seconds is None else f"{s.oldest_unpublished_age_seconds:.1f}s"
        click.echo(f"unpublished:            {s.unpublished}")
        click.echo(f"due now:                {s.due}")
        click.echo(f"failing (last_error):   {s.failing}")
        click.echo(f"oldest unpublished age: {age}")
        click.echo(f"published last minute:  {s.published_last_minute}")
