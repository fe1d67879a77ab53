"""The next retry time on each exchange, and an index for searching by idempotency key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime, nullable=True))
        batch.create_index("ix_exchanges_idempotency_key", ["idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_index("ix_exchanges_idempotency_key")
        batch.drop_column("next_attempt_at")
