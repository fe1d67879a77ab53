"""Wake the relays only for outbox messages that are due at once.

A step handed off to the worker that wrote it (services/workflow/local_steps.py) writes its
message due a lease later; the relay finds it by its poll if that worker dies. Waking every
relay for it would only make each run an empty batch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        DROP TRIGGER IF EXISTS outbox_messages_notify ON outbox_messages;
        CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
            FOR EACH ROW WHEN (NEW.available_at <= NEW.created_at)
            EXECUTE FUNCTION outbox_messages_notify();
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        DROP TRIGGER IF EXISTS outbox_messages_notify ON outbox_messages;
        CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
            FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_notify();
        """
    )
