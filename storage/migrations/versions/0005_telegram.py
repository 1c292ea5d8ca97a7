"""telegram chats: the purchase dialogue's state per Telegram chat

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_chats",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=True),
        sa.Column("payment_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_telegram_chats")),
    )
    with op.batch_alter_table("telegram_chats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_telegram_chats_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("telegram_chats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telegram_chats_updated_at"))
    op.drop_table("telegram_chats")
