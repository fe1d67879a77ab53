"""Demo customers for the embedded mode and `flask demo-accounts` (demo data only)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, func, select

from models import AccountKind, accounts
from services.accounts import open_account
from services.credentials import Role, create_customer, issue_api_key

#: The demo customers and what each starts with.
DEMO_ACCOUNTS: dict[str, dict[str, Decimal]] = {
    "Ada Lovelace": {"CAD": Decimal("10000.00"), "USD": Decimal("2500.00"), "EUR": Decimal("1000.00")},
    "Grace Hopper": {"USD": Decimal("8000.00"), "EUR": Decimal("3000.00"), "JPY": Decimal("500000")},
    "Alan Turing": {"GBP": Decimal("6000.00"), "CHF": Decimal("2000.00"), "CAD": Decimal("1500.00")},
}
#: The demo customers' password for the web portal (demo data only).
DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class DemoCustomer:
    owner: str
    email: str
    account_id: uuid.UUID
    api_key: str


def create_demo_accounts(engine: Engine, currencies: Iterable[str]) -> list[DemoCustomer]:
    """Demo customers, each with a funded account (in the traded `currencies`), a login and an API key."""
    traded_currencies = set(currencies)
    created = []
    # A second run gets fresh logins: e-mail addresses are unique.
    suffix = f"+{uuid.uuid4().hex[:6]}" if customer_count(engine) else ""
    for owner, funding in DEMO_ACCOUNTS.items():
        email = f"{owner.split()[0].lower()}{suffix}@example.com"
        customer_id = create_customer(engine, owner, email=email, password=DEMO_PASSWORD)
        traded = {c: a for c, a in funding.items() if c in traded_currencies}
        account_id = open_account(engine, owner, traded, customer_id=customer_id)
        key = issue_api_key(engine, role=Role.CUSTOMER, label="demo", customer_id=customer_id)
        created.append(DemoCustomer(owner, email, account_id, key))
    return created


def customer_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(accounts).where(accounts.c.kind == AccountKind.CUSTOMER)
        ).scalar_one()
