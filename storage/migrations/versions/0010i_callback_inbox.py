"""mpesa_callbacks: a partial index on the callbacks kept and not applied yet (the inbox a worker drains)

Revision ID: 0010i
Revises: 0009d
"""
import sqlalchemy as sa
from alembic import op

revision = '0010i'
down_revision = '0009d'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Holds only the rows waiting (`received`): the drain's "oldest first" stays one short index read
    # whatever the table's size, and costs nothing once they are applied.
    op.create_index('ix_mpesa_callbacks_received', 'mpesa_callbacks', ['id'], unique=False,
                    postgresql_where=sa.text("outcome = 'received'"), sqlite_where=sa.text("outcome = 'received'"))


def downgrade() -> None:
    op.drop_index('ix_mpesa_callbacks_received', table_name='mpesa_callbacks')
