"""Initial schema: accounts, balances, exchanges, timeline, ledger, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import datetime as _dt
import uuid as _uuid

import sqlalchemy as sa
from alembic import op

from models.base import BigId, JSONDocument, Money, Rate, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

HOUSE_ACCOUNT_ID = "00000000-0000-0000-0000-000000000001"
STATES = (
    "'pending', 'quoted', 'debited', 'credited', 'completed', 'failed', 'compensating', 'refunded', "
    "'needs_attention'"
)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("kind IN ('customer', 'house')", name="kind"),
        sa.CheckConstraint("status IN ('active', 'frozen', 'closed')", name="status"),
    )
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("available", Money, nullable=False),
        sa.Column("held", Money, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("available >= 0", name="available_not_negative"),
        sa.CheckConstraint("held >= 0", name="held_not_negative"),
    )
    op.create_table(
        "exchanges",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("from_currency", sa.String(3), nullable=False),
        sa.Column("to_currency", sa.String(3), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("rate", Rate, nullable=True),
        sa.Column("to_amount", Money, nullable=True),
        sa.Column("quote_expires_at", UTCDateTime, nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("step", sa.String(32), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(120), nullable=True),
        sa.Column("claimed_until", UTCDateTime, nullable=True),
        sa.Column("claim_token", sa.Integer(), nullable=False),
        sa.Column("rescued_from", sa.String(120), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("outcome_unknown", sa.Boolean(), nullable=False),
        sa.Column("receipt_sent_at", UTCDateTime, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("account_id", "idempotency_key"),
        sa.CheckConstraint(f"state IN ({STATES})", name="state"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("from_currency <> to_currency", name="currencies_differ"),
    )
    op.create_index("ix_exchanges_account_created", "exchanges", ["account_id", "created_at"])
    op.create_index("ix_exchanges_state_updated", "exchanges", ["state", "updated_at"])
    op.create_table(
        "exchange_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("exchange_id", sa.Uuid(), sa.ForeignKey("exchanges.id"), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(120), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("detail", JSONDocument, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_exchange_events_exchange_id", "exchange_events", ["exchange_id", "id"])
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("posting_id", sa.Uuid(), nullable=False),
        sa.Column("exchange_id", sa.Uuid(), sa.ForeignKey("exchanges.id"), nullable=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("amount <> 0", name="amount_not_zero"),
    )
    op.create_index("ix_ledger_entries_posting_id", "ledger_entries", ["posting_id"])
    op.create_index("ix_ledger_entries_exchange_id", "ledger_entries", ["exchange_id"])
    op.create_index("ix_ledger_entries_account_currency", "ledger_entries", ["account_id", "currency"])
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("payload", JSONDocument, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("available_at", UTCDateTime, nullable=False),
        sa.Column("published_at", UTCDateTime, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("trace_headers", JSONDocument, nullable=True),
    )
    op.create_index(
        "ix_outbox_messages_unpublished",
        "outbox_messages",
        ["available_at"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_messages_published",
        "outbox_messages",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
        sqlite_where=sa.text("published_at IS NOT NULL"),
    )
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.Uuid()),
        sa.column("owner", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("status", sa.String()),
        sa.column("created_at", UTCDateTime),
    )
    op.bulk_insert(
        accounts,
        [{"id": _uuid.UUID(HOUSE_ACCOUNT_ID), "owner": "House settlement", "kind": "house",
          "status": "active", "created_at": _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)}],
    )

    if op.get_bind().dialect.name == "postgresql":
        # Relays LISTEN on this channel. A statement-level trigger folds a batch insert
        # into one notification, and PostgreSQL folds repeats within a transaction.
        op.execute(
            """
            CREATE FUNCTION outbox_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('outbox_messages', '');
                RETURN NULL;
            END $$;
            CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
                FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_notify();
            """
        )
        # Double entry enforced by the database itself: at commit, every posting
        # touched must sum to zero per currency (a deferred constraint trigger).
        op.execute(
            """
            CREATE FUNCTION ledger_posting_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (
                    SELECT 1 FROM ledger_entries WHERE posting_id = NEW.posting_id
                    GROUP BY currency HAVING sum(amount) <> 0
                ) THEN
                    RAISE EXCEPTION 'ledger posting % does not balance', NEW.posting_id
                        USING ERRCODE = 'check_violation';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_entries
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_posting_balanced();
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_posting_balanced ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_posting_balanced()")
        op.execute("DROP TRIGGER IF EXISTS outbox_messages_notify ON outbox_messages")
        op.execute("DROP FUNCTION IF EXISTS outbox_messages_notify()")
    for table in ("outbox_messages", "ledger_entries", "exchange_events", "exchanges", "balances", "accounts"):
        op.drop_table(table)
