"""one active meter per Tuya device; revocable dashboard sessions; USSD sessions per phone

Revision ID: 0007g
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007g'
down_revision = '0007t'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Two active meters on one device would credit the wrong unit. Retired meters may share it.
    # (Fails on a database that already has such a pair: `lipameter meter deactivate` one first.)
    op.create_index('uq_meters_active_device', 'meters', ['device_id'], unique=True,
                    postgresql_where=sa.text('active'), sqlite_where=sa.text('active'))
    op.create_index('ix_ussd_sessions_phone_created_at', 'ussd_sessions', ['phone', 'created_at'])
    with op.batch_alter_table('admin_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_gen', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('admin_users', schema=None) as batch_op:
        batch_op.drop_column('session_gen')
    op.drop_index('ix_ussd_sessions_phone_created_at', table_name='ussd_sessions')
    op.drop_index('uq_meters_active_device', table_name='meters')
