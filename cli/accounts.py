"""Schema, customers, accounts and API keys."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

import click
from flask import Flask

from cli.context import engine, settings
from infra import migrate
from services.accounts import customer_of_account, directory, open_account
from services.credentials import Role, create_customer, customer_name, issue_api_key, revoke_api_key
from services.demo import DEMO_PASSWORD, DemoCustomer, create_demo_accounts


def demo_lines(customers: list[DemoCustomer]) -> list[str]:
    return [f"{c.owner}: account {c.account_id}  login {c.email} / {DEMO_PASSWORD}  API key {c.api_key}"
            for c in customers]


def echo_demo(customers: list[DemoCustomer]) -> None:
    for line in demo_lines(customers):
        click.echo(line)


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
        migrate.upgrade(engine())
        click.echo("database is at the latest migration")

    @app.cli.command("demo-accounts")
    def demo_accounts() -> None:
        """Create demo customers with funded accounts; print their logins and API keys."""
        echo_demo(create_demo_accounts(engine(), settings().currencies))

    @app.cli.command("create-customer")
    @click.argument("name")
    @click.option("--email", default=None, help="login of the web portal")
    @click.option("--password", default=None, help="password of the web portal")
    def create_customer_command(name: str, email: str | None, password: str | None) -> None:
        """Create a customer; prints its id."""
        click.echo(str(create_customer(engine(), name, email=email, password=password)))

    @app.cli.command("open-account")
    @click.argument("owner")
    @click.option("--fund", "funding", multiple=True, help="CURRENCY:AMOUNT, repeatable")
    @click.option("--customer", "customer_id", type=click.UUID, default=None,
                  help="the owning customer (default: a new customer named OWNER)")
    def open_account_command(owner: str, funding: tuple[str, ...], customer_id: uuid.UUID | None) -> None:
        """Open a customer account funded from the house account."""
        click.echo(str(open_account(engine(), owner, _parse_funding(funding), customer_id=customer_id)))

    _register_keys(app)
    _register_customers(app)


def _register_keys(app: Flask) -> None:
    @app.cli.group("api-key")
    def api_key_group() -> None:
        """API keys: shown once when created, stored hashed."""

    @api_key_group.command("create")
    @click.option("--account", "account_id", type=click.UUID, default=None, help="a key for this account's customer")
    @click.option("--customer", "customer_id", type=click.UUID, default=None, help="a customer's key")
    @click.option("--operator", "operator", default=None, help="an operator's key, with the operator's name")
    @click.option("--label", default="cli")
    def api_key_create(account_id: uuid.UUID | None, customer_id: uuid.UUID | None, operator: str | None,
                       label: str) -> None:
        """Create a key for a customer (by account or customer id) or an operator; printed once, never stored."""
        if [account_id, customer_id, operator].count(None) != 2:
            raise click.UsageError("give exactly one of --account, --customer and --operator")
        if operator is not None:
            click.echo(issue_api_key(engine(), role=Role.OPERATOR, label=operator))
            return
        if account_id is not None:
            customer_id = customer_of_account(engine(), account_id)
        elif customer_name(engine(), customer_id) is None:  # type: ignore[arg-type]
            raise click.ClickException(f"no customer {customer_id} (for an account id, use --account)")
        click.echo(issue_api_key(engine(), role=Role.CUSTOMER, label=label, customer_id=customer_id))

    @api_key_group.command("revoke")
    @click.argument("prefix")
    def api_key_revoke(prefix: str) -> None:
        """Revoke a key by its prefix (the part after `fxk_`)."""
        if not revoke_api_key(engine(), prefix.removeprefix("fxk_").split("_")[0]):
            raise click.ClickException("no active key with that prefix")
        click.echo("revoked")


def _register_customers(app: Flask) -> None:
    @app.cli.group("customers")
    def customers_group() -> None:
        """Customers, their accounts and API keys."""

    @customers_group.command("list")
    def customers_list() -> None:
        """Every customer: id, name, login, accounts and the prefixes of their live API keys."""
        for c in directory(engine()):
            keys = ", ".join(f"fxk_{p}_…" for p in c.key_prefixes) or "no key"
            accounts = ", ".join(map(str, c.account_ids)) or "no account"
            click.echo(f"{c.id}  {c.name}  {c.email or '-'}  accounts: {accounts}  keys: {keys}")
