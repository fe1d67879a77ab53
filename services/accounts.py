"""Opening and funding accounts, and reading balances."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, insert, select

from domain import ledger as postings
from domain.ledger import HOUSE_ACCOUNT_ID
from errors import UnknownAccount
from models import AccountKind, AccountStatus, accounts, api_keys, balances, customers
from models.base import utcnow
from services.ledger import post

__all__ = ["HOUSE_ACCOUNT_ID", "AccountView", "BalanceView", "accounts_of", "get_account", "open_account"]


@dataclass(frozen=True)
class BalanceView:
    currency: str
    available: Decimal
    held: Decimal


@dataclass(frozen=True)
class AccountView:
    id: uuid.UUID
    owner: str
    status: str
    balances: tuple[BalanceView, ...]


def open_account(engine: Engine, owner: str, funding: dict[str, Decimal],
                 customer_id: uuid.UUID | None = None) -> uuid.UUID:
    """Create a customer account funded from the house account, as balanced postings.

    Without `customer_id`, a customer named `owner` is created to own it.
    """
    if customer_id is None:
        from services.credentials import create_customer

        customer_id = create_customer(engine, owner)
    account_id = uuid.uuid4()
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(accounts),
            {"id": account_id, "owner": owner, "customer_id": customer_id, "kind": AccountKind.CUSTOMER,
             "status": AccountStatus.ACTIVE, "created_at": now},
        )
        for currency, amount in sorted(funding.items()):
            conn.execute(
                insert(balances),
                {"account_id": account_id, "currency": currency, "available": amount,
                 "held": Decimal(0), "updated_at": now},
            )
            if amount:
                post(conn, postings.funding(account_id, HOUSE_ACCOUNT_ID, currency, amount),
                     exchange_id=None, now=now)
    return account_id


def get_account(engine: Engine, account_id: uuid.UUID, customer_id: uuid.UUID | None = None) -> AccountView:
    """The account and its balances; with `customer_id`, only if that customer owns it."""
    query = select(accounts.c.id, accounts.c.owner, accounts.c.status).where(
        accounts.c.id == account_id, accounts.c.kind == AccountKind.CUSTOMER)
    if customer_id is not None:
        query = query.where(accounts.c.customer_id == customer_id)
    with engine.connect() as conn:
        account = conn.execute(query).first()
        if account is None:
            raise UnknownAccount("No such account.")
        rows = conn.execute(
            select(balances.c.currency, balances.c.available, balances.c.held)
            .where(balances.c.account_id == account_id)
            .order_by(balances.c.currency)
        ).all()
    return AccountView(
        id=account.id,
        owner=account.owner,
        status=account.status,
        balances=tuple(BalanceView(r.currency, r.available, r.held) for r in rows),
    )


def accounts_of(engine: Engine, customer_id: uuid.UUID) -> list[AccountView]:
    with engine.connect() as conn:
        ids = conn.execute(select(accounts.c.id).where(accounts.c.customer_id == customer_id)
                           .order_by(accounts.c.created_at)).scalars().all()
    return [get_account(engine, account_id) for account_id in ids]


@dataclass(frozen=True)
class CustomerEntry:
    """One line of `flask customers list`."""

    id: uuid.UUID
    name: str
    email: str | None
    account_ids: list[uuid.UUID]
    key_prefixes: list[str]


def directory(engine: Engine) -> list[CustomerEntry]:
    """Every customer, oldest first, with their accounts and the prefixes of their live API keys."""
    with engine.connect() as conn:
        people = list(conn.execute(select(customers.c.id, customers.c.name, customers.c.email)
                                   .order_by(customers.c.created_at, customers.c.name)))
        owned: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in conn.execute(select(accounts.c.customer_id, accounts.c.id).where(
                accounts.c.kind == AccountKind.CUSTOMER).order_by(accounts.c.created_at)):
            owned.setdefault(row.customer_id, []).append(row.id)
        keys: dict[uuid.UUID, list[str]] = {}
        for row in conn.execute(select(api_keys.c.customer_id, api_keys.c.prefix).where(
                api_keys.c.customer_id.is_not(None), api_keys.c.revoked_at.is_(None))):
            keys.setdefault(row.customer_id, []).append(row.prefix)
    return [CustomerEntry(p.id, p.name, p.email, owned.get(p.id, []), keys.get(p.id, [])) for p in people]


def customer_of_account(engine: Engine, account_id: uuid.UUID) -> uuid.UUID:
    """The customer who owns the account; UnknownAccount for none (or the house's)."""
    with engine.connect() as conn:
        owner = conn.execute(select(accounts.c.customer_id).where(
            accounts.c.id == account_id, accounts.c.kind == AccountKind.CUSTOMER)).scalar_one_or_none()
    if owner is None:
        raise UnknownAccount(f"No customer account {account_id}.")
    return owner
