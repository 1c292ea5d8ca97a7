"""notifications: Africa's Talking's message id and its delivery report (status, reason, when delivered)

Revision ID: 0009d
Revises: 0008c
"""
import sqlalchemy as sa
from alembic import op

revision = '0009d'
down_revision = '0008c'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('delivery_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('delivery_error', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_notifications_provider_id'), ['provider_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_provider_id'))
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('delivery_error')
        batch_op.drop_column('delivery_status')
        batch_op.drop_column('provider_id')
