"""One active relay: the lease the relays take turns on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "relay_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=True),
    )
    op.bulk_insert(table, [{"name": "outbox", "holder": None, "expires_at": None}])


def downgrade() -> None:
    op.drop_table("relay_leases")
