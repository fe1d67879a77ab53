"""Firm quotes, and the quote an exchange was accepted on.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import Money, Rate, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quotes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("from_currency", sa.String(3), nullable=False),
        sa.Column("to_currency", sa.String(3), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("rate", Rate, nullable=False),
        sa.Column("to_amount", Money, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime, nullable=True),
        sa.Column("exchange_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_quotes_amount_positive")),
        sa.CheckConstraint("from_currency <> to_currency", name=op.f("ck_quotes_currencies_differ")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_quotes_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
        sa.UniqueConstraint("exchange_id", name=op.f("uq_quotes_exchange_id")),
    )
    with op.batch_alter_table("exchanges") as batch:
        batch.add_column(sa.Column("quote_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(op.f("fk_exchanges_quote_id_quotes"), "quotes", ["quote_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_constraint(op.f("fk_exchanges_quote_id_quotes"), type_="foreignkey")
        batch.drop_column("quote_id")
    op.drop_table("quotes")
