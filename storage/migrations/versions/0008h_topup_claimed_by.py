"""top-ups record the worker whose attempt holds them (a dead worker's claim is taken over early)

Revision ID: 0008h
Revises: 0007t
"""
import sqlalchemy as sa
from alembic import op

revision = '0008h'
down_revision = '0007w'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('topups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('topups', schema=None) as batch_op:
        batch_op.drop_column('claimed_by')
