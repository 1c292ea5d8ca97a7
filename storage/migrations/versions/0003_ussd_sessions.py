"""ussd sessions: the dialogue's state per Africa's Talking sessionId

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ussd_sessions",
        sa.Column("session_id", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("service_code", sa.String(length=40), nullable=True),
        sa.Column("network_code", sa.String(length=16), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("last_text", sa.Text(), nullable=False),
        sa.Column("last_answer", sa.String(length=400), nullable=False),
        sa.Column("hops", sa.Integer(), nullable=False),
        sa.Column("ended", sa.Boolean(), nullable=False),
        sa.Column("payment_id", sa.String(length=36), nullable=True),
        sa.Column("end_status", sa.String(length=16), nullable=True),
        sa.Column("end_report", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_ussd_sessions")),
    )
    with op.batch_alter_table("ussd_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ussd_sessions_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ussd_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ussd_sessions_updated_at"))
    op.drop_table("ussd_sessions")
