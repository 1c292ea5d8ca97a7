"""Daraja C2B (Paybill and Till): payer fields on payments; kind, TransID and note on stored bodies

Revision ID: 0008c
Revises: 0007t
"""
import sqlalchemy as sa
from alembic import op

revision = '0008c'
down_revision = '0008r'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payer_name', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('payer_msisdn', sa.String(length=64), nullable=True))
    with op.batch_alter_table('mpesa_callbacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='stk', nullable=False))
        batch_op.add_column(sa.Column('trans_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('note', sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f('ix_mpesa_callbacks_trans_id'), ['trans_id'], unique=False)
        batch_op.create_index('ix_mpesa_callbacks_kind_outcome', ['kind', 'outcome'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mpesa_callbacks', schema=None) as batch_op:
        batch_op.drop_index('ix_mpesa_callbacks_kind_outcome')
        batch_op.drop_index(batch_op.f('ix_mpesa_callbacks_trans_id'))
        batch_op.drop_column('note')
        batch_op.drop_column('trans_id')
        batch_op.drop_column('kind')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('payer_msisdn')
        batch_op.drop_column('payer_name')
