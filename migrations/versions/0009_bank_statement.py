"""The bank's record, copied from its change feed; how far the bank comparison has reached.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import Money, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_statement_lines",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("reference", sa.String(120), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_bank_statement_lines_reference", "bank_statement_lines", ["reference"])
    op.create_index("ix_bank_statement_lines_change_seq", "bank_statement_lines", ["change_seq"])
    with op.batch_alter_table("ops_checks") as batch:
        batch.add_column(sa.Column("covered_through", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ops_checks") as batch:
        batch.drop_column("covered_through")
    op.drop_table("bank_statement_lines")
