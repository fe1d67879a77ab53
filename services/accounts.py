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


def open_account(engine: Engine, owner: str, funding: dict[str, Decimal]) -> uuid.UUID:
    """Create a customer account funded from the house account, as balanced postings."""
    account_id = uuid.uuid4()
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(accounts),
            {"id": account_id, "owner": owner, "kind": AccountKind.CUSTOMER,
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


def get_account(engine: Engine, account_id: uuid.UUID) -> AccountView:
    with engine.connect() as conn:
        account = conn.execute(
            select(accounts.c.id, accounts.c.owner, accounts.c.status).where(
                accounts.c.id == account_id, accounts.c.kind == AccountKind.CUSTOMER
            )
        ).first()
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
