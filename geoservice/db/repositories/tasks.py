"""Task state transitions in SQL. Every transition is a compare-and-set on the row.

A worker *claims* a task (``accepted``, or ``running`` with an expired lease, or held by a dead
process on this host) by taking a lease under a fresh owner token and incrementing ``attempts``.
Progress, lease renewal and the final write are all conditional on still holding that token, so a
stale attempt can never overwrite a newer one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from geoservice.db.models import AnalysisResult, AnalysisTask


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    owner: str
    attempt: int
    max_attempts: int
    analysis_type: str
    parameters: dict[str, Any]
    created_by: uuid.UUID
    name: str


_CLAIM = text("""
UPDATE analysis_tasks
   SET status = 'running', attempts = attempts + 1, lease_owner = :owner,
       lease_expires_at = now() + make_interval(secs => :lease), started_at = coalesce(started_at, now()),
       phase = 'starting', updated_at = now(), error_message = NULL, error_code = NULL
 WHERE id = :id AND cancel_requested_at IS NULL
   AND (status = 'accepted'
        OR (status = 'running' AND (lease_expires_at < now() OR lease_owner = ANY(:dead_owners))))
RETURNING attempts, max_attempts, analysis_type, parameters, created_by, name
""")


def current_lease_owner(session: Session, task_id: uuid.UUID) -> str | None:
    """Return who holds a running task's lease (None when the task is not running)."""
    return session.execute(
        text("SELECT lease_owner FROM analysis_tasks WHERE id = :id AND status = 'running'"), {"id": task_id}
    ).scalar()


def claim(session: Session, task_id: uuid.UUID, owner: str, lease_s: int, dead_owners: Sequence[str]) -> Claim | None:
    """Take the task for ``owner``; None when another live attempt holds it or it is finished."""
    row = session.execute(
        _CLAIM, {"id": task_id, "owner": owner, "lease": lease_s, "dead_owners": list(dead_owners)}
    ).one_or_none()
    if row is None:
        return None
    return Claim(task_id, owner, row.attempts, row.max_attempts, row.analysis_type, row.parameters,
                 row.created_by, row.name)


def renew_lease(session: Session, task_id: uuid.UUID, owner: str, lease_s: int) -> bool:
    """Extend the lease; False when the lease was lost or the task was cancelled."""
    row = session.execute(
        text("UPDATE analysis_tasks SET lease_expires_at = now() + make_interval(secs => :lease) "
             "WHERE id = :id AND lease_owner = :owner AND status = 'running' RETURNING 1"),
        {"id": task_id, "owner": owner, "lease": lease_s},
    ).one_or_none()
    return row is not None


def write_progress(session: Session, task_id: uuid.UUID, owner: str, progress: float, phase: str) -> bool:
    """Record progress (0-100) and phase while holding the lease."""
    row = session.execute(
        text("UPDATE analysis_tasks SET progress = :p, phase = :phase, updated_at = now() "
             "WHERE id = :id AND lease_owner = :owner AND status = 'running' RETURNING 1"),
        {"id": task_id, "owner": owner, "p": round(min(max(progress, 0.0), 100.0), 2), "phase": phase},
    ).one_or_none()
    return row is not None


def lock_if_holding(session: Session, task_id: uuid.UUID, owner: str) -> AnalysisTask | None:
    """Lock the task row for the final write, if ``owner`` still holds a running lease on it."""
    return session.execute(
        select(AnalysisTask)
        .where(AnalysisTask.id == task_id, AnalysisTask.lease_owner == owner, AnalysisTask.status == "running")
        .with_for_update()
    ).scalar_one_or_none()


def finish(session: Session, task: AnalysisTask, status: str, *, error_message: str | None = None,
           error_code: str | None = None) -> None:
    """Move a locked task to a final status and drop its lease."""
    task.status = status
    # clock_timestamp(), not now(): now() is the start of the storing transaction.
    task.completed_at = func.clock_timestamp()
    task.lease_owner = None
    task.lease_expires_at = None
    task.phase = status
    if status == "successful":
        task.progress = 100  # type: ignore[assignment]
    task.error_message = error_message
    task.error_code = error_code
    session.flush()


def fail_if_holding(session: Session, task_id: uuid.UUID, owner: str | None, message: str, code: str) -> bool:
    """Mark the task failed when ``owner`` (or, with None, anyone) still holds it running."""
    row = session.execute(
        text("UPDATE analysis_tasks SET status = 'failed', error_message = :m, error_code = :c, phase = 'failed', "
             "completed_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
             "WHERE id = :id AND status IN ('running', 'accepted') AND (CAST(:owner AS text) IS NULL "
             "OR lease_owner = :owner) RETURNING 1"),
        {"id": task_id, "owner": owner, "m": message, "c": code},
    ).one_or_none()
    return row is not None


def add_result(session: Session, **values: Any) -> AnalysisResult:
    result = AnalysisResult(**values)
    session.add(result)
    session.flush()
    return result


def results_for(session: Session, task_id: uuid.UUID) -> Sequence[AnalysisResult]:
    return session.execute(
        select(AnalysisResult).where(AnalysisResult.task_id == task_id).order_by(AnalysisResult.created_at)
    ).scalars().all()


def list_page(session: Session, owner_id: uuid.UUID | None, *, status: str | None, analysis_type: str | None,
              limit: int, offset: int) -> tuple[Sequence[AnalysisTask], int]:
    """Return one page of the owner's tasks (everyone's with ``owner_id=None``), newest first, and the total."""
    query = select(AnalysisTask)
    if owner_id is not None:
        query = query.where(AnalysisTask.created_by == owner_id)
    if status is not None:
        query = query.where(AnalysisTask.status == status)
    if analysis_type is not None:
        query = query.where(AnalysisTask.analysis_type == analysis_type)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(AnalysisTask.created_at.desc(), AnalysisTask.id).limit(limit).offset(offset))
    return rows.scalars().all(), int(total)


def cancel(session: Session, task_id: uuid.UUID) -> str | None:
    """Dismiss an accepted or running task; return the status it had (None if it was already final)."""
    row = session.execute(
        text("UPDATE analysis_tasks t SET status = 'dismissed', cancel_requested_at = now(), phase = 'dismissed', "
             "completed_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
             "FROM (SELECT id, status FROM analysis_tasks WHERE id = :id FOR UPDATE) old "
             "WHERE t.id = old.id AND old.status IN ('accepted', 'running') RETURNING old.status"),
        {"id": task_id},
    ).one_or_none()
    return None if row is None else str(row[0])


def sweep_candidates(session: Session, queue: str, accepted_grace_s: int, limit: int = 500
                     ) -> list[tuple[uuid.UUID, str]]:
    """Tasks of ``queue`` to (re-)send: accepted but not sent within the grace period (or sent that long
    ago and still waiting), and running with an expired lease (not re-sent more often than the grace)."""
    rows = session.execute(
        text("SELECT id, status FROM analysis_tasks WHERE queue = :q AND "
             "coalesce(enqueued_at, created_at) < now() - make_interval(secs => :g) AND "
             "(status = 'accepted' OR (status = 'running' AND lease_expires_at < now())) "
             "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED"),
        {"q": queue, "g": accepted_grace_s, "limit": limit},
    ).all()
    return [(r[0], r[1]) for r in rows]


def fail_exhausted(session: Session, queue: str) -> int:
    """Fail running tasks of ``queue`` whose lease expired on their last allowed attempt."""
    result = session.execute(
        text("UPDATE analysis_tasks SET status = 'failed', phase = 'failed', completed_at = now(), updated_at = now(), "
             "error_code = 'MaxAttemptsExceeded', error_message = 'gave up after ' || attempts || "
             "' attempts: the worker running it was lost each time', lease_owner = NULL, lease_expires_at = NULL "
             "WHERE queue = :q AND status = 'running' AND lease_expires_at < now() AND attempts >= max_attempts"),
        {"q": queue},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
