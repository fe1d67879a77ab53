"""Exchanges per state, kept by a trigger, so counting them does not read every exchange.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Slots per state: concurrent transitions into one state pick one at random, so they rarely
#: queue on one row lock until their commits.
SLOTS = 16


def upgrade() -> None:
    op.create_table(
        "exchange_state_counts",
        sa.Column("state", sa.String(20), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the embedded mode) counts the table itself: it is small there
    op.execute(
        f"""
        CREATE FUNCTION exchange_state_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            pick integer := floor(random() * {SLOTS})::integer;
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO exchange_state_counts AS c (state, slot, n) VALUES (OLD.state, pick, -1)
                    ON CONFLICT (state, slot) DO UPDATE SET n = c.n - 1;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO exchange_state_counts AS c (state, slot, n) VALUES (NEW.state, pick, 1)
                    ON CONFLICT (state, slot) DO UPDATE SET n = c.n + 1;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER exchange_state_counts_rows AFTER INSERT OR DELETE ON exchanges
            FOR EACH ROW EXECUTE FUNCTION exchange_state_counts_track();
        CREATE TRIGGER exchange_state_counts_moves AFTER UPDATE OF state ON exchanges
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION exchange_state_counts_track();
        LOCK TABLE exchanges IN SHARE MODE;
        INSERT INTO exchange_state_counts (state, slot, n) SELECT state, 0, count(*) FROM exchanges GROUP BY state;
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS exchange_state_counts_moves ON exchanges")
        op.execute("DROP TRIGGER IF EXISTS exchange_state_counts_rows ON exchanges")
        op.execute("DROP FUNCTION IF EXISTS exchange_state_counts_track()")
    op.drop_table("exchange_state_counts")
