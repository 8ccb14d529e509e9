"""rejected_instances: finding_reviews.rejected_instances, the damage instances a reviewer rejected (issue 27)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('finding_reviews', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejected_instances', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('finding_reviews', schema=None) as batch_op:
        batch_op.drop_column('rejected_instances')
