"""Foundation: PostGIS, users, datasets, spatial_data, analysis_tasks, analysis_results (issue #2).

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 00:49:31.794082
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table('users',
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=50), nullable=True),
    sa.Column('hashed_password', sa.String(length=255), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('is_superuser', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('last_login', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('datasets',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('owner_id', sa.Uuid(), nullable=False),
    sa.Column('srid', sa.Integer(), nullable=False),
    sa.Column('crs', sa.Text(), nullable=False),
    sa.Column('geometry_type', sa.String(length=50), nullable=False),
    sa.Column('feature_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('extent', postgresql.ARRAY(sa.Float()), nullable=True),
    sa.Column('extent_crs84', postgresql.ARRAY(sa.Float()), nullable=True),
    sa.Column('fields', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('source', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_datasets_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('id', 'srid', name=op.f('uq_datasets_id_srid')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_datasets_owner_id_name'))
    )
    op.create_index(op.f('ix_datasets_owner_id'), 'datasets', ['owner_id'], unique=False)
    op.create_table('analysis_tasks',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('analysis_type', sa.String(length=50), nullable=False),
    sa.Column('parameters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=20), server_default=sa.text("'accepted'"), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('progress', sa.Numeric(precision=5, scale=2), server_default=sa.text('0'), nullable=False),
    sa.Column('supermap_request', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('supermap_result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('accepted','running','successful','failed','dismissed')", name=op.f('ck_analysis_tasks_status_valid')),
    sa.CheckConstraint('progress >= 0 AND progress <= 100', name=op.f('ck_analysis_tasks_progress_range')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_analysis_tasks_created_by_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_tasks'))
    )
    op.create_index(op.f('ix_analysis_tasks_analysis_type'), 'analysis_tasks', ['analysis_type'], unique=False)
    op.create_index(op.f('ix_analysis_tasks_created_by'), 'analysis_tasks', ['created_by'], unique=False)
    op.create_index(op.f('ix_analysis_tasks_status'), 'analysis_tasks', ['status'], unique=False)
    op.create_geospatial_table('spatial_data',
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('fid', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('data_type', sa.String(length=50), nullable=False),
    sa.Column('geometry', Geometry(dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('srid', sa.Integer(), sa.Computed('ST_SRID(geometry)', persisted=True), nullable=False),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('crs', sa.Text(), nullable=False),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id', 'srid'], ['datasets.id', 'datasets.srid'], name='fk_spatial_data_dataset_srid', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spatial_data')),
    sa.UniqueConstraint('dataset_id', 'fid', name=op.f('uq_spatial_data_dataset_id_fid'))
    )
    op.create_geospatial_index('ix_spatial_data_geometry', 'spatial_data', ['geometry'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_table('analysis_results',
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('result_type', sa.String(length=50), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('result_metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_analysis_results_dataset_id_datasets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['task_id'], ['analysis_tasks.id'], name=op.f('fk_analysis_results_task_id_analysis_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_results'))
    )
    op.create_index(op.f('ix_analysis_results_task_id'), 'analysis_results', ['task_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_analysis_results_task_id'), table_name='analysis_results')
    op.drop_table('analysis_results')
    op.drop_geospatial_index('ix_spatial_data_geometry', table_name='spatial_data', postgresql_using='gist', column_name='geometry')
    op.drop_geospatial_table('spatial_data')
    op.drop_index(op.f('ix_analysis_tasks_status'), table_name='analysis_tasks')
    op.drop_index(op.f('ix_analysis_tasks_created_by'), table_name='analysis_tasks')
    op.drop_index(op.f('ix_analysis_tasks_analysis_type'), table_name='analysis_tasks')
    op.drop_table('analysis_tasks')
    op.drop_index(op.f('ix_datasets_owner_id'), table_name='datasets')
    op.drop_table('datasets')
    op.drop_table('users')
