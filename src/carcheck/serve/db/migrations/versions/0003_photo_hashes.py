"""photo_hashes: the reused-photo index of the service (issue 19), per tenant

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from carcheck.serve.db.models import UTCDateTime  # a type, not the models: migrations stay frozen

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('photo_hashes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('photo', sa.String(length=300), nullable=False),
    sa.Column('hash_size', sa.Integer(), nullable=False),
    sa.Column('aspect', sa.Float(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('hashes', sa.LargeBinary(), nullable=False),
    sa.Column('added', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_photo_hashes_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_photo_hashes_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_photo_hashes')),
    sa.UniqueConstraint('case_id', 'photo', name='uq_photo_hashes_case_id_photo')
    )
    with op.batch_alter_table('photo_hashes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_photo_hashes_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_photo_hashes_tenant_id_hash_size', ['tenant_id', 'hash_size'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('photo_hashes', schema=None) as batch_op:
        batch_op.drop_index('ix_photo_hashes_tenant_id_hash_size')
        batch_op.drop_index(batch_op.f('ix_photo_hashes_case_id'))
    op.drop_table('photo_hashes')
