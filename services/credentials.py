"""Customers and API keys: keys are random, shown once, stored as a SHA-256 hash.

A key is `fxk_<prefix>_<secret>`: the prefix finds the row without a scan, the secret's
hash is compared in constant time. Keys carry 192 bits of randomness, so a fast hash is
enough (a slow password hash protects guessable secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine, bindparam, insert, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from infra.database import single_read
from models import api_keys, customers
from models.base import utcnow

KEY_PREFIX = "fxk"
#: What issue_api_key makes a prefix of (token_hex), within the column's 16 characters. Anything
#: else is refused before the database sees it: PostgreSQL cannot even compare text holding NUL.
_PREFIX_SHAPE = re.compile(r"[0-9a-f]{1,16}")


class Role(StrEnum):
    CUSTOMER = "customer"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a customer (with the accounts they own) or an operator."""

    role: Role
    name: str
    customer_id: uuid.UUID | None = None
    key_prefix: str | None = None


def create_customer(engine: Engine, name: str, *, email: str | None = None, password: str | None = None) -> uuid.UUID:
    customer_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert(customers), {
            "id": customer_id, "name": name, "email": email.lower() if email else None,
            "password_hash": generate_password_hash(password) if password else None, "created_at": utcnow(),
        })
    return customer_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_api_key(engine: Engine, *, role: Role, label: str, customer_id: uuid.UUID | None = None) -> str:
    """Create a key and return it: the only time it is ever seen in full."""
    prefix = secrets.token_hex(5)
    secret = secrets.token_urlsafe(24)
    with engine.begin() as conn:
        conn.execute(insert(api_keys), {
            "id": uuid.uuid4(), "prefix": prefix, "secret_hash": _hash(secret), "role": role,
            "customer_id": customer_id, "label": label, "created_at": utcnow(),
        })
    return f"{KEY_PREFIX}_{prefix}_{secret}"


#: Built once: every API request runs it, and building a statement costs more than running it.
_KEY_BY_PREFIX = select(api_keys.c.secret_hash, api_keys.c.role, api_keys.c.customer_id, api_keys.c.label,
                        api_keys.c.revoked_at).where(api_keys.c.prefix == bindparam("k_prefix"))


def verify_api_key(engine: Engine, key: str) -> Principal | None:
    """The key's holder, or None for a malformed, unknown or revoked key."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not _PREFIX_SHAPE.fullmatch(parts[1]):
        return None
    _, prefix, secret = parts
    with single_read(engine) as conn:
        row = conn.execute(_KEY_BY_PREFIX, {"k_prefix": prefix}).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    return Principal(Role(row.role), row.label, row.customer_id, prefix)


def revoke_api_key(engine: Engine, prefix: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(update(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                              .values(revoked_at=utcnow()))
    return result.rowcount == 1


def check_password(engine: Engine, email: str, password: str) -> Principal | None:
    """The customer with this e-mail and password, or None (also for an e-mail no row could hold)."""
    if "\x00" in email:  # PostgreSQL text cannot hold NUL: no customer has it, and the query would fail
        return None
    with engine.connect() as conn:
        row = conn.execute(select(customers.c.id, customers.c.name, customers.c.password_hash)
                           .where(customers.c.email == email.lower())).first()
    if row is None or row.password_hash is None or not check_password_hash(row.password_hash, password):
        return None
    return Principal(Role.CUSTOMER, row.name, row.id)


def customer_name(engine: Engine, customer_id: uuid.UUID) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(customers.c.name).where(customers.c.id == customer_id)).scalar_one_or_none()
