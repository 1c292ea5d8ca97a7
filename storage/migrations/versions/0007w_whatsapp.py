"""whatsapp: conversation state per number, incoming message ids (handled once), delivery statuses

Revision ID: 0007w
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0007w"
down_revision = '0007g'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "whatsapp_chats",
        sa.Column("wa_id", sa.String(length=20), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.String(length=36), nullable=True),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wa_id", name=op.f("pk_whatsapp_chats")),
    )
    op.create_index(op.f("ix_whatsapp_chats_updated_at"), "whatsapp_chats", ["updated_at"], unique=False)
    op.create_table(
        "whatsapp_inbound",
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("wa_id", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_whatsapp_inbound")),
    )
    op.create_index("ix_whatsapp_inbound_wa_id_received_at", "whatsapp_inbound", ["wa_id", "received_at"],
                    unique=False)
    op.create_table(
        "whatsapp_statuses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("wa_id", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whatsapp_statuses")),
    )
    op.create_index(op.f("ix_whatsapp_statuses_message_id"), "whatsapp_statuses", ["message_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_whatsapp_statuses_message_id"), table_name="whatsapp_statuses")
    op.drop_table("whatsapp_statuses")
    op.drop_index("ix_whatsapp_inbound_wa_id_received_at", table_name="whatsapp_inbound")
    op.drop_table("whatsapp_inbound")
    op.drop_index(op.f("ix_whatsapp_chats_updated_at"), table_name="whatsapp_chats")
    op.drop_table("whatsapp_chats")
