"""Operators' truth: the stuck clock, heartbeats, check outcomes, the audit trail and the findings' life.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import BigId, JSONDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.add_column(sa.Column("progressed_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("requeued_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("step_epoch", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE exchanges SET progressed_at = updated_at")
    with op.batch_alter_table("exchanges") as batch:
        batch.alter_column("progressed_at", existing_type=UTCDateTime, nullable=False)
        batch.create_index("ix_exchanges_state_progressed", ["state", "progressed_at"])

    op.create_table(
        "process_heartbeats",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("host", sa.String(120), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("beat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime, nullable=True),
        sa.Column("holding", JSONDocument, nullable=True),
    )
    op.create_index("ix_process_heartbeats_role_beat", "process_heartbeats", ["role", "beat_at"])
    op.create_table(
        "ops_checks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_attempt_at", UTCDateTime, nullable=False),
        sa.Column("last_success_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )

    op.create_table(
        "operator_actions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("operator", sa.String(120), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("exchange_id", sa.Uuid(), nullable=True),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("detail", JSONDocument, nullable=True),
    )
    op.create_index("ix_operator_actions_at", "operator_actions", ["at"])
    op.create_index("ix_operator_actions_exchange_id", "operator_actions", ["exchange_id", "at"])
    with op.batch_alter_table("reconciliation_findings") as batch:
        batch.add_column(sa.Column("subject", sa.String(120), nullable=True))
        batch.add_column(sa.Column("acknowledged_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(120), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(120), nullable=True))
    findings = sa.table("reconciliation_findings", sa.column("id", sa.BigInteger()),
                        sa.column("exchange_id", sa.Uuid()), sa.column("subject", sa.String(120)))
    bind = op.get_bind()
    for finding_id, exchange_id in bind.execute(sa.select(findings.c.id, findings.c.exchange_id)).all():
        bind.execute(findings.update().where(findings.c.id == finding_id).values(subject=str(exchange_id)))
    with op.batch_alter_table("reconciliation_findings") as batch:
        batch.alter_column("subject", existing_type=sa.String(120), nullable=False)
        batch.alter_column("exchange_id", existing_type=sa.Uuid(), nullable=True)
        batch.drop_constraint("uq_reconciliation_findings_exchange_id_kind", type_="unique")
        batch.create_unique_constraint("uq_reconciliation_findings_subject_kind", ["subject", "kind"])


def downgrade() -> None:
    op.execute("DELETE FROM reconciliation_findings WHERE exchange_id IS NULL")
    with op.batch_alter_table("reconciliation_findings") as batch:
        batch.drop_constraint("uq_reconciliation_findings_subject_kind", type_="unique")
        batch.create_unique_constraint("uq_reconciliation_findings_exchange_id_kind", ["exchange_id", "kind"])
        batch.alter_column("exchange_id", existing_type=sa.Uuid(), nullable=False)
        for column in ("resolved_by", "note", "acknowledged_by", "acknowledged_at", "subject"):
            batch.drop_column(column)
    op.drop_index("ix_operator_actions_exchange_id", "operator_actions")
    op.drop_index("ix_operator_actions_at", "operator_actions")
    op.drop_table("operator_actions")
    op.drop_table("ops_checks")
    op.drop_index("ix_process_heartbeats_role_beat", "process_heartbeats")
    op.drop_table("process_heartbeats")
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_index("ix_exchanges_state_progressed")
        batch.drop_column("step_epoch")
        batch.drop_column("requeued_at")
        batch.drop_column("progressed_at")
