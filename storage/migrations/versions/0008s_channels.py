"""channels: Telegram update ids seen (idempotent webhook)

Revision ID: 0008s
Revises: 0007t
"""
import sqlalchemy as sa
from alembic import op

revision = '0008s'
down_revision = '0008h'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'telegram_updates',
        sa.Column('update_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('update_id', name=op.f('pk_telegram_updates')),
    )
    with op.batch_alter_table('telegram_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_telegram_updates_seen_at'), ['seen_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('telegram_updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_telegram_updates_seen_at'))
    op.drop_table('telegram_updates')
