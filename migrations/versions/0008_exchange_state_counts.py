"""Exchanges per state, kept by a trigger, so counting them does not read every exchange.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import BigId

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table(
        "exchange_state_counts",
        sa.Column("state", sa.String(20), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Appended to by the trigger, folded into the counts by the reconciler: no row is ever
    # updated by two transactions, so counting takes no lock a transition could wait on.
    op.create_table(
        "exchange_state_deltas",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the embedded mode) counts the table itself: it is small there
    op.execute(
        """
        CREATE FUNCTION exchange_state_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO exchange_state_deltas (state, delta) VALUES (NEW.state, 1);
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO exchange_state_deltas (state, delta) VALUES (OLD.state, -1);
            ELSE
                INSERT INTO exchange_state_deltas (state, delta) VALUES (OLD.state, -1), (NEW.state, 1);
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER exchange_state_counts_rows AFTER INSERT OR DELETE ON exchanges
            FOR EACH ROW EXECUTE FUNCTION exchange_state_counts_track();
        CREATE TRIGGER exchange_state_counts_moves AFTER UPDATE OF state ON exchanges
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION exchange_state_counts_track();
        LOCK TABLE exchanges IN SHARE MODE;
        INSERT INTO exchange_state_counts (state, n) SELECT state, count(*) FROM exchanges GROUP BY state;
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS exchange_state_counts_moves ON exchanges")
        op.execute("DROP TRIGGER IF EXISTS exchange_state_counts_rows ON exchanges")
        op.execute("DROP FUNCTION IF EXISTS exchange_state_counts_track()")
    op.drop_table("exchange_state_deltas")
    op.drop_table("exchange_state_counts")
