"""Command-line interface: `flask --app app <command>`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

import click
from flask import Flask, current_app
from sqlalchemy import Engine, func, select

import migrate
from models import AccountKind, accounts
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key, revoke_api_key
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


#: The demo customers' password for the web portal (demo data only).
DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class DemoCustomer:
    owner: str
    email: str
    account_id: uuid.UUID
    api_key: str


def create_demo_accounts(engine: Engine, settings: Settings) -> list[DemoCustomer]:
    """Demo customers, each with a funded account, a portal login and an API key."""
    created = []
    # A second run gets fresh logins: e-mail addresses are unique.
    suffix = f"+{uuid.uuid4().hex[:6]}" if customer_count(engine) else ""
    for owner, funding in DEMO_ACCOUNTS.items():
        email = f"{owner.split()[0].lower()}{suffix}@example.com"
        customer_id = create_customer(engine, owner, email=email, password=DEMO_PASSWORD)
        traded = {c: a for c, a in funding.items() if c in settings.currencies}
        account_id = open_account(engine, owner, traded, customer_id=customer_id)
        key = issue_api_key(engine, role=Role.CUSTOMER, label="demo", customer_id=customer_id)
        created.append(DemoCustomer(owner, email, account_id, key))
    return created


def echo_demo(customers: list[DemoCustomer]) -> None:
    for c in customers:
        click.echo(f"{c.owner}: account {c.account_id}  login {c.email} / {DEMO_PASSWORD}  API key {c.api_key}")


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
        """Create demo customers with funded accounts; print their logins and API keys."""
        echo_demo(create_demo_accounts(_engine(), _settings()))

    @app.cli.command("create-customer")
    @click.argument("name")
    @click.option("--email", default=None, help="login of the web portal")
    @click.option("--password", default=None, help="password of the web portal")
    def create_customer_command(name: str, email: str | None, password: str | None) -> None:
        """Create a customer; prints its id."""
        click.echo(str(create_customer(_engine(), name, email=email, password=password)))

    @app.cli.command("open-account")
    @click.argument("owner")
    @click.option("--fund", "funding", multiple=True, help="CURRENCY:AMOUNT, repeatable")
    @click.option("--customer", "customer_id", type=click.UUID, default=None,
                  help="the owning customer (default: a new customer named OWNER)")
    def open_account_command(owner: str, funding: tuple[str, ...], customer_id: uuid.UUID | None) -> None:
        """Open a customer account funded from the house account."""
        click.echo(str(open_account(_engine(), owner, _parse_funding(funding), customer_id=customer_id)))

    @app.cli.group("api-key")
    def api_key_group() -> None:
        """API keys: shown once when created, stored hashed."""

    @api_key_group.command("create")
    @click.option("--customer", "customer_id", type=click.UUID, default=None, help="a customer's key")
    @click.option("--operator", "operator", default=None, help="an operator's key, with the operator's name")
    @click.option("--label", default="cli")
    def api_key_create(customer_id: uuid.UUID | None, operator: str | None, label: str) -> None:
        """Create a key for a customer or an operator; the key is printed once, never stored."""
        if (customer_id is None) == (operator is None):
            raise click.UsageError("give exactly one of --customer and --operator")
        if operator is not None:
            key = issue_api_key(_engine(), role=Role.OPERATOR, label=operator)
        else:
            key = issue_api_key(_engine(), role=Role.CUSTOMER, label=label, customer_id=customer_id)
        click.echo(key)

    @api_key_group.command("revoke")
    @click.argument("prefix")
    def api_key_revoke(prefix: str) -> None:
        """Revoke a key by its prefix (the part after `fxk_`)."""
        if not revoke_api_key(_engine(), prefix.removeprefix("fxk_").split("_")[0]):
            raise click.ClickException("no active key with that prefix")
        click.echo("revoked")

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
