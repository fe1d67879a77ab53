"""Command-line interface: `flask --app app <command>`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

import click
from flask import Flask, current_app
from sqlalchemy import Engine, func, select

import migrate
from models import AccountKind, accounts
from services.accounts import open_account
from settings import Settings

#: The demo customers and what each starts with.
DEMO_ACCOUNTS: dict[str, dict[str, Decimal]] = {
    "Ada Lovelace": {"CAD": Decimal("10000.00"), "USD": Decimal("2500.00"), "EUR": Decimal("1000.00")},
    "Grace Hopper": {"USD": Decimal("8000.00"), "EUR": Decimal("3000.00"), "JPY": Decimal("500000")},
    "Alan Turing": {"GBP": Decimal("6000.00"), "CHF": Decimal("2000.00"), "CAD": Decimal("1500.00")},
}


def _engine() -> Engine:
    return current_app.extensions["fx.engine"]


def _settings() -> Settings:
    return current_app.extensions["fx.settings"]


def create_demo_accounts(engine: Engine, settings: Settings) -> list[tuple[str, object]]:
    created = []
    for owner, funding in DEMO_ACCOUNTS.items():
        traded = {c: a for c, a in funding.items() if c in settings.currencies}
        created.append((owner, open_account(engine, owner, traded)))
    return created


def customer_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(accounts).where(accounts.c.kind == AccountKind.CUSTOMER)
        ).scalar_one()


def _parse_funding(values: tuple[str, ...]) -> dict[str, Decimal]:
    funding: dict[str, Decimal] = {}
    for value in values:
        currency, _, amount = value.partition(":")
        try:
            funding[currency.upper()] = Decimal(amount)
        except InvalidOperation:
            raise click.BadParameter(f"{value!r}: expected CURRENCY:AMOUNT, e.g. CAD:1000.00") from None
    return funding


def register(app: Flask) -> None:
    @app.cli.command("db-upgrade")
    def db_upgrade() -> None:
        """Apply the database migrations (the release phase)."""
        migrate.upgrade(_engine())
        click.echo("database is at the latest migration")

    @app.cli.command("demo-accounts")
    def demo_accounts() -> None:
        """Create demo customer accounts with balances, and print their ids."""
        for owner, account_id in create_demo_accounts(_engine(), _settings()):
            click.echo(f"{account_id}  {owner}")

    @app.cli.command("open-account")
    @click.argument("owner")
    @click.option("--fund", "funding", multiple=True, help="CURRENCY:AMOUNT, repeatable")
    def open_account_command(owner: str, funding: tuple[str, ...]) -> None:
        """Open a customer account funded from the house account."""
        click.echo(str(open_account(_engine(), owner, _parse_funding(funding))))

    @app.cli.group("relay")
    def relay_group() -> None:
        """The outbox relay: publish outbox messages to the broker."""

    @relay_group.command("run")
    def relay_run() -> None:
        """Run the relay daemon until SIGTERM/SIGINT (the Procfile's `relay:`)."""
        from outbox.daemon import run_daemon

        run_daemon(_settings(), _engine())

    @relay_group.command("status")
    def relay_status() -> None:
        """Unpublished count, oldest unpublished age and publish rate of the outbox."""
        from models.base import utcnow
        from outbox.store import stats

        with _engine().connect() as conn:
            s = stats(conn, now=utcnow())
        age = "-" if s.oldest_unpublished_age_seconds is None else f"{s.oldest_unpublished_age_seconds:.1f}s"
        click.echo(f"unpublished:            {s.unpublished}")
        click.echo(f"due now:                {s.due}")
        click.echo(f"failing (last_error):   {s.failing}")
        click.echo(f"oldest unpublished age: {age}")
        click.echo(f"published last minute:  {s.published_last_minute}")

    @app.cli.group("reconcile")
    def reconcile_group() -> None:
        """The reconciler: re-enqueue stuck exchanges, compare our ledger with the bank."""

    @reconcile_group.command("once")
    def reconcile_once_command() -> None:
        """One pass; prints what was re-enqueued and every ledger/bank mismatch."""
        from services.reconciler import reconcile_once

        settings = _settings()
        report = reconcile_once(_engine(), current_app.extensions["fx.bank"],
                                stuck_after=timedelta(seconds=settings.stuck_after_seconds),
                                queue=settings.queue_name)
        for line in report.lines():
            click.echo(line)

    @reconcile_group.command("run")
    def reconcile_run() -> None:
        """Run the reconciler daemon until SIGTERM/SIGINT (the Procfile's `reconciler:`)."""
        from services.reconciler import run_daemon

        run_daemon(_settings(), _engine(), current_app.extensions["fx.bank"])

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=5000, show_default=True, type=int)
    def serve(host: str, port: int) -> None:
        """Run everything in one process: migrations, web, relay and worker (embedded mode)."""
        from embedded import run_embedded

        run_embedded(current_app._get_current_object(), host=host, port=port)  # type: ignore[attr-defined]
