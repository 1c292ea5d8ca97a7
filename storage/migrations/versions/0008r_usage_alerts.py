"""meter readings, daily roll-ups, alert settings and the shared Tuya call budget (issue 15)

Revision ID: 0008r
Revises: 0007t
"""
import sqlalchemy as sa
from alembic import op

revision = '0008r'
down_revision = '0008s'
branch_labels = None
depends_on = None

Q = sa.Numeric(precision=18, scale=4)
T = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'meter_readings',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('at', T, nullable=False),
        sa.Column('balance', Q, nullable=True),
        sa.Column('energy_total', Q, nullable=True),
        sa.Column('credit', Q, nullable=True),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f('fk_meter_readings_meter_id_meters'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_meter_readings')),
    )
    op.create_index('ix_meter_readings_meter_id_at', 'meter_readings', ['meter_id', 'at'], unique=False)
    op.create_table(
        'meter_daily',
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('consumption', Q, nullable=True),
        sa.Column('credits', Q, nullable=False),
        sa.Column('manual_credits', Q, nullable=False),
        sa.Column('first_balance', Q, nullable=True),
        sa.Column('last_balance', Q, nullable=True),
        sa.Column('covered_s', sa.Integer(), nullable=False),
        sa.Column('readings', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f('fk_meter_daily_meter_id_meters'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('meter_id', 'day', name=op.f('pk_meter_daily')),
    )
    op.create_table(
        'meter_usage',
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('threshold', Q, nullable=True),
        sa.Column('next_read_at', T, nullable=True),
        sa.Column('rolled_until', sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f('fk_meter_usage_meter_id_meters'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('meter_id', name=op.f('pk_meter_usage')),
    )
    op.create_index(op.f('ix_meter_usage_next_read_at'), 'meter_usage', ['next_read_at'], unique=False)
    op.create_table(
        'tenant_alerts',
        sa.Column('tenant_id', sa.String(length=36), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column('threshold', Q, nullable=True),
        sa.Column('low_sent_at', T, nullable=True),
        sa.Column('zero_sent_at', T, nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_alerts_tenant_id_tenants'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['meter_id'], ['meters.id'], name=op.f('fk_tenant_alerts_meter_id_meters'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', 'meter_id', name=op.f('pk_tenant_alerts')),
    )
    op.create_table(
        'call_budgets',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('tokens', sa.Numeric(precision=14, scale=6), nullable=False),
        sa.Column('updated_at', T, nullable=False),
        sa.Column('next_run_at', T, nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_call_budgets')),
    )


def downgrade() -> None:
    op.drop_table('call_budgets')
    op.drop_table('tenant_alerts')
    op.drop_index(op.f('ix_meter_usage_next_read_at'), table_name='meter_usage')
    op.drop_table('meter_usage')
    op.drop_table('meter_daily')
    op.drop_index('ix_meter_readings_meter_id_at', table_name='meter_readings')
    op.drop_table('meter_readings')
