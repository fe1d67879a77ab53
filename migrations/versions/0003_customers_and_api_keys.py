"""Customers own accounts; API keys (hashed) for customers and operators.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.Uuid(), sa.ForeignKey("customers.id"), nullable=True),
        sa.Column("label", sa.String(120), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("prefix"),
        sa.CheckConstraint("role IN ('customer', 'operator')", name="role"),
        sa.CheckConstraint("(role = 'customer') = (customer_id IS NOT NULL)", name="customer_keys_have_a_customer"),
    )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("customer_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key("fk_accounts_customer_id_customers", "customers", ["customer_id"], ["id"])
        batch.create_index("ix_accounts_customer_id", ["customer_id"])


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_index("ix_accounts_customer_id")
        batch.drop_constraint("fk_accounts_customer_id_customers", type_="foreignkey")
        batch.drop_column("customer_id")
    op.drop_table("api_keys")
    op.drop_table("customers")
