"""The agent layer (issue #7): tools agents may call, their sessions, every call, and the session event log.

``agent_events.seq`` orders a session's events for server-sent events (``Last-Event-ID``). Writers of a
session's events hold a per-session advisory lock until they commit (``repositories.agents.add_event`` and
the ``agent_task_event`` trigger of migration 0005), so within a session ``seq`` order is commit order and a
reader that resumes after ``seq`` never skips an event committed later.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geoservice.db.base import Base, CreatedAt, Timestamps, UUIDPk

SESSION_MODES = ("rest", "mcp-stdio", "mcp-http")
SESSION_STATUSES = ("active", "closed")
# running: in progress; succeeded: answered with a result; submitted: answered with a task handle;
# failed: refused or failed (bad arguments, unknown dataset, analysis error); rejected: rate limited or
# forbidden; replayed: an Idempotency-Key retry answered with the first call's result.
INVOCATION_STATUSES = ("running", "succeeded", "submitted", "failed", "rejected", "replayed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AgentTool(UUIDPk, Timestamps, Base):
    """A tool agents may call. Code owns name/title/description/schemas (synced at start-up); operators own
    ``permissions`` (roles allowed), ``is_active`` and ``rate_limit_qps`` (0: unlimited)."""

    __tablename__ = "agent_tools"
    __table_args__ = (CheckConstraint("rate_limit_qps >= 0", name="rate_limit_qps_non_negative"),)

    name: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    output_schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    permissions: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    rate_limit_qps: Mapped[int] = mapped_column(Integer, server_default=text("10"))
    # "analysis" (buffer, overlay, reproject, plugins) or "read".
    kind: Mapped[str] = mapped_column(String(20), server_default=text("'read'"))


class AgentSession(UUIDPk, Timestamps, Base):
    __tablename__ = "agent_sessions"
    __table_args__ = (
        CheckConstraint(_in("mode", SESSION_MODES), name="mode_valid"),
        CheckConstraint(_in("status", SESSION_STATUSES), name="status_valid"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    # How the agent talks to us: the REST API, or MCP over stdio or streamable HTTP.
    mode: Mapped[str] = mapped_column(String(20), server_default=text("'rest'"))
    status: Mapped[str] = mapped_column(String(20), server_default=text("'active'"))
    # The last tool call (the session's creation until the first one).
    last_message_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgentToolInvocation(UUIDPk, CreatedAt, Base):
    __tablename__ = "agent_tool_invocations"
    __table_args__ = (
        CheckConstraint(_in("status", INVOCATION_STATUSES), name="status_valid"),
        Index("ix_agent_tool_invocations_session_created", "session_id", "created_at"),
    )

    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    tool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agent_tools.id"), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default=text("'running'"))
    # Exactly one of result (succeeded, submitted, replayed) and error (failed, rejected) once finished.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    wrote_memory: Mapped[bool] = mapped_column(server_default=text("false"))  # no agent memories yet
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The analysis task a large input became (its progress becomes session events through a trigger).
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("analysis_tasks.id", ondelete="SET NULL"),
                                                      index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))


class AgentEvent(UUIDPk, CreatedAt, Base):
    __tablename__ = "agent_events"
    __table_args__ = (Index("ix_agent_events_session_seq", "session_id", "seq"),)

    # Orderable event id for server-sent events (Last-Event-ID); the UUID stays the primary key.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agent_sessions.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # tool_call_started, tool_call_finished, task_progress, task_finished
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
