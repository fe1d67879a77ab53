"""Opening and funding accounts, and reading balances."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, insert, select

from errors import UnknownAccount
from models import AccountKind, AccountStatus, accounts, balances, ledger_entries
from models.base import utcnow

#: The house/settlement account, created by the first migration. It is the bank's side
#: of every posting, so the ledger sums to zero per currency from the first funding on.
HOUSE_ACCOUNT_ID = uuid.UUID("00000000-0000-0000-0000-000000000001")


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
                posting_id = uuid.uuid4()
                conn.execute(
                    insert(ledger_entries),
                    [
                        {"posting_id": posting_id, "account_id": HOUSE_ACCOUNT_ID, "currency": currency,
                         "amount": -amount, "kind": "funding", "created_at": now},
                        {"posting_id": posting_id, "account_id": account_id, "currency": currency,
                         "amount": amount, "kind": "funding", "created_at": now},
                    ],
                )
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
