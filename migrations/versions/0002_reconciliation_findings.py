"""Reconciliation findings, and an index for paging exchanges by last change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_findings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("exchange_id", sa.Uuid(), sa.ForeignKey("exchanges.id"), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("found_at", UTCDateTime, nullable=False),
        sa.Column("resolved_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("exchange_id", "kind"),
    )
    op.create_index("ix_reconciliation_findings_open", "reconciliation_findings", ["resolved_at", "found_at"])
    op.create_index("ix_exchanges_updated", "exchanges", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_updated", "exchanges")
    op.drop_table("reconciliation_findings")
