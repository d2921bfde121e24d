"""Agents (#7): agent_tools, agent_sessions, agent_tool_invocations, agent_events, and the task-event trigger.

The trigger turns the progress and status changes of an analysis task that an agent tool call started into
``agent_events`` of that call's session, whoever writes them (worker, sweeper, cancel), exactly once. Like
every writer of session events it holds the session's advisory lock until commit, so a session's events are
committed in ``seq`` order (see geoservice/db/models/agent.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:43:58.733070
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TASK_EVENT_FUNCTION = """
CREATE FUNCTION agent_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inv record;
BEGIN
    SELECT i.id, i.session_id, i.user_id, t.name AS tool INTO inv
      FROM agent_tool_invocations i JOIN agent_tools t ON t.id = i.tool_id
     WHERE i.task_id = NEW.id ORDER BY i.created_at, i.id LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('geoservice.agent_events:' || inv.session_id::text, 0));
    INSERT INTO agent_events (session_id, user_id, kind, payload)
    VALUES (inv.session_id, inv.user_id,
            CASE WHEN NEW.status IN ('successful', 'failed', 'dismissed') THEN 'task_finished' ELSE 'task_progress' END,
            jsonb_build_object('task_id', NEW.id, 'invocation_id', inv.id, 'tool', inv.tool, 'status', NEW.status,
                               'progress', NEW.progress, 'phase', NEW.phase, 'error_code', NEW.error_code,
                               'error_message', NEW.error_message, 'result_dataset_id', NEW.result_dataset_id));
    RETURN NULL;
END
$$
"""
TASK_EVENT_TRIGGER = """
CREATE TRIGGER agent_task_events AFTER UPDATE OF status, progress, phase ON analysis_tasks FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.progress IS DISTINCT FROM NEW.progress
      OR OLD.phase IS DISTINCT FROM NEW.phase)
EXECUTE FUNCTION agent_task_event()
"""


def upgrade() -> None:
    op.create_table('agent_tools',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('input_schema', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('output_schema', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('permissions', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('rate_limit_qps', sa.Integer(), server_default=sa.text('10'), nullable=False),
    sa.Column('kind', sa.String(length=20), server_default=sa.text("'read'"), nullable=False),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('rate_limit_qps >= 0', name=op.f('ck_agent_tools_rate_limit_qps_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_tools')),
    sa.UniqueConstraint('name', name=op.f('uq_agent_tools_name'))
    )
    op.create_table('agent_sessions',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('mode', sa.String(length=20), server_default=sa.text("'rest'"), nullable=False),
    sa.Column('status', sa.String(length=20), server_default=sa.text("'active'"), nullable=False),
    sa.Column('last_message_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("mode IN ('rest', 'mcp-stdio', 'mcp-http')", name=op.f('ck_agent_sessions_mode_valid')),
    sa.CheckConstraint("status IN ('active', 'closed')", name=op.f('ck_agent_sessions_status_valid')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agent_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_sessions'))
    )
    op.create_index(op.f('ix_agent_sessions_user_id'), 'agent_sessions', ['user_id'], unique=False)
    op.create_table('agent_events',
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], name=op.f('fk_agent_events_session_id_agent_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agent_events_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_events')),
    sa.UniqueConstraint('seq', name=op.f('uq_agent_events_seq'))
    )
    op.create_index('ix_agent_events_session_seq', 'agent_events', ['session_id', 'seq'], unique=False)
    op.create_index(op.f('ix_agent_events_user_id'), 'agent_events', ['user_id'], unique=False)
    op.create_table('agent_tool_invocations',
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('tool_id', sa.Uuid(), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=20), server_default=sa.text("'running'"), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('wrote_memory', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('task_id', sa.Uuid(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'submitted', 'failed', 'rejected', 'replayed')", name=op.f('ck_agent_tool_invocations_status_valid')),
    sa.ForeignKeyConstraint(['session_id'], ['agent_sessions.id'], name=op.f('fk_agent_tool_invocations_session_id_agent_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['analysis_tasks.id'], name=op.f('fk_agent_tool_invocations_task_id_analysis_tasks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tool_id'], ['agent_tools.id'], name=op.f('fk_agent_tool_invocations_tool_id_agent_tools')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_agent_tool_invocations_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_tool_invocations'))
    )
    op.create_index('ix_agent_tool_invocations_session_created', 'agent_tool_invocations', ['session_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_agent_tool_invocations_task_id'), 'agent_tool_invocations', ['task_id'], unique=False)
    op.create_index(op.f('ix_agent_tool_invocations_tool_id'), 'agent_tool_invocations', ['tool_id'], unique=False)
    op.create_index(op.f('ix_agent_tool_invocations_user_id'), 'agent_tool_invocations', ['user_id'], unique=False)
    op.execute(TASK_EVENT_FUNCTION)
    op.execute(TASK_EVENT_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS agent_task_events ON analysis_tasks")
    op.execute("DROP FUNCTION IF EXISTS agent_task_event()")
    op.drop_index(op.f('ix_agent_tool_invocations_user_id'), table_name='agent_tool_invocations')
    op.drop_index(op.f('ix_agent_tool_invocations_tool_id'), table_name='agent_tool_invocations')
    op.drop_index(op.f('ix_agent_tool_invocations_task_id'), table_name='agent_tool_invocations')
    op.drop_index('ix_agent_tool_invocations_session_created', table_name='agent_tool_invocations')
    op.drop_table('agent_tool_invocations')
    op.drop_index(op.f('ix_agent_events_user_id'), table_name='agent_events')
    op.drop_index('ix_agent_events_session_seq', table_name='agent_events')
    op.drop_table('agent_events')
    op.drop_index(op.f('ix_agent_sessions_user_id'), table_name='agent_sessions')
    op.drop_table('agent_sessions')
    op.drop_table('agent_tools')
