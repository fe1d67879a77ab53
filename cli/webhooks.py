"""Webhooks from the command line: a customer's endpoints, their secrets, the deliveries and replays."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import Flask

from cli.context import engine, settings
from errors import ClientError
from services.credentials import customer_name
from services.webhooks import delivery, endpoints, log
from services.webhooks.egress import EgressPolicy


@contextmanager
def _one_line() -> Iterator[None]:
    """A refusal (unknown id, bad URL) as one clear line and exit status 1, not a traceback."""
    try:
        yield
    except ClientError as refusal:
        problems = "; ".join(f"{name}: {' '.join(p)}" for name, p in refusal.fields.items())
        raise click.ClickException(refusal.message + (f" ({problems})" if problems else "")) from None


def _show_endpoint(row: Any, secret: bool = False) -> None:
    state = "disabled" if row.disabled_at else "active"
    click.echo(f"{row.id}  {state}  {row.url}  customer {row.customer_id}")
    if secret:
        click.echo(f"secret: {row.secret}")


def register(app: Flask) -> None:
    @app.cli.group("webhooks")
    def webhooks_group() -> None:
        """Webhook endpoints and deliveries."""

    @webhooks_group.command("add")
    @click.option("--customer", "customer_id", type=click.UUID, required=True)
    @click.option("--url", required=True, help="http:// or https:// URL the events are POSTed to")
    @click.option("--description", default="")
    def add(customer_id: uuid.UUID, url: str, description: str) -> None:
        """Register an endpoint for a customer; prints its id and secret."""
        if customer_name(engine(), customer_id) is None:
            raise click.ClickException(f"no customer {customer_id}")
        with _one_line():
            _show_endpoint(endpoints.create_endpoint(engine(), customer_id, url, description,
                                                     egress=EgressPolicy(settings().webhook_networks),
                                                     max_endpoints=settings().webhook_max_endpoints), secret=True)

    @webhooks_group.command("list")
    @click.option("--customer", "customer_id", type=click.UUID, default=None)
    def list_endpoints(customer_id: uuid.UUID | None) -> None:
        """Endpoints, newest first (every customer's without --customer)."""
        for row in endpoints.endpoints_of(engine(), customer_id):
            _show_endpoint(row)

    @webhooks_group.command("rotate")
    @click.argument("endpoint_id", type=click.UUID)
    def rotate(endpoint_id: uuid.UUID) -> None:
        """A new secret for the endpoint; the old one keeps signing too for 24 hours."""
        with _one_line():
            _show_endpoint(endpoints.rotate_secret(engine(), endpoint_id, None), secret=True)

    @webhooks_group.command("deliveries")
    @click.option("--exchange", "exchange_id", type=click.UUID, default=None)
    @click.option("--endpoint", "endpoint_id", type=click.UUID, default=None)
    @click.option("--limit", type=click.IntRange(1, 1000), default=50)
    def deliveries(exchange_id: uuid.UUID | None, endpoint_id: uuid.UUID | None, limit: int) -> None:
        """Deliveries, newest first, each with its attempts."""
        for entry in log.deliveries(engine(), exchange_id=exchange_id, endpoint_id=endpoint_id, limit=limit):
            d = entry["delivery"]
            click.echo(f"{d.id}  {d.type}  exchange {d.exchange_id}  {d.status}  -> {d.url}")
            for a in entry["attempts"]:
                click.echo(f"    #{a.attempt} {a.attempted_at:%Y-%m-%d %H:%M:%S}  {a.status_code or 'no answer'}"
                           f"  {a.latency_ms} ms  {a.response_snippet[:80]!r}")

    @webhooks_group.command("replay")
    @click.argument("delivery_id", type=click.UUID)
    def replay(delivery_id: uuid.UUID) -> None:
        """Send a delivery's event again now (same webhook-id), with a fresh schedule of retries."""
        with _one_line():
            log.owner_of(engine(), delivery_id, None)
        delivery.replay(engine(), delivery_id, queue=settings().queue_name)
        click.echo(f"replay of {delivery_id} queued")

