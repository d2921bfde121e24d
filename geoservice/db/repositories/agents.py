"""Agent tools, sessions, invocations and events in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from geoservice.db.models import AgentEvent, AgentSession, AgentTool, AgentToolInvocation


def sync_tools(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Upsert tools by name: code-owned columns are updated (only when they changed); ``permissions``,
    ``is_active`` and ``rate_limit_qps`` are set on insert only, so an operator's changes stay."""
    values = list(rows)
    if not values:
        return
    stmt = insert(AgentTool).values(values)
    owned = ("title", "description", "input_schema", "output_schema", "kind")
    changed = tuple_(*(getattr(AgentTool, c) for c in owned)).is_distinct_from(
        tuple_(*(getattr(stmt.excluded, c) for c in owned)))
    session.execute(stmt.on_conflict_do_update(
        index_elements=[AgentTool.name],
        set_={**{c: getattr(stmt.excluded, c) for c in owned}, "updated_at": func.now()},
        where=changed,
    ))


def tools(session: Session, names: Iterable[str]) -> Sequence[AgentTool]:
    return session.execute(select(AgentTool).where(AgentTool.name.in_(list(names))).order_by(AgentTool.name)
                           ).scalars().all()


def tool_by_name(session: Session, name: str) -> AgentTool | None:
    return session.execute(select(AgentTool).where(AgentTool.name == name)).scalar_one_or_none()


def own_session(session: Session, session_id: uuid.UUID, user_id: uuid.UUID) -> AgentSession | None:
    row = session.get(AgentSession, session_id)
    return row if row is not None and row.user_id == user_id else None


def list_sessions(session: Session, user_id: uuid.UUID, *, limit: int, offset: int
                  ) -> tuple[Sequence[AgentSession], int]:
    base = select(AgentSession).where(AgentSession.user_id == user_id)
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = session.execute(base.order_by(AgentSession.created_at.desc(), AgentSession.id).limit(limit).offset(offset))
    return rows.scalars().all(), int(total)


def list_invocations(session: Session, session_id: uuid.UUID, *, limit: int, offset: int
                     ) -> tuple[Sequence[tuple[AgentToolInvocation, str]], int]:
    """One page of a session's invocations (oldest first) with their tool names, and the total."""
    base = select(AgentToolInvocation, AgentTool.name).join(AgentTool, AgentTool.id == AgentToolInvocation.tool_id
                                                            ).where(AgentToolInvocation.session_id == session_id)
    total = session.execute(select(func.count()).select_from(
        select(AgentToolInvocation.id).where(AgentToolInvocation.session_id == session_id).subquery())).scalar_one()
    rows = session.execute(base.order_by(AgentToolInvocation.created_at, AgentToolInvocation.id)
                           .limit(limit).offset(offset)).all()
    return [(r[0], r[1]) for r in rows], int(total)


def touch_session(session: Session, session_id: uuid.UUID) -> None:
    session.execute(update(AgentSession).where(AgentSession.id == session_id)
                    .values(last_message_at=func.now(), updated_at=func.now()))


def add_event(session: Session, session_id: uuid.UUID, user_id: uuid.UUID, kind: str,
              payload: dict[str, Any]) -> None:
    """Append an event; the session's advisory lock (held to commit) keeps ``seq`` in commit order."""
    lock_session_events(session, session_id)
    session.add(AgentEvent(session_id=session_id, user_id=user_id, kind=kind, payload=payload))
    session.flush()


def lock_session_events(session: Session, session_id: uuid.UUID) -> None:
    # The same key as the agent_task_event() trigger of migration 0005.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": f"geoservice.agent_events:{session_id}"})


def events_after(session: Session, session_id: uuid.UUID, after: int, limit: int = 500) -> Sequence[AgentEvent]:
    return session.execute(select(AgentEvent).where(AgentEvent.session_id == session_id, AgentEvent.seq > after)
                           .order_by(AgentEvent.seq).limit(limit)).scalars().all()
