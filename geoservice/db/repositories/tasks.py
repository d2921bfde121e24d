"""The one owner of ``analysis_tasks`` state: every transition is a compare-and-set on the row.

Nothing else writes a task's status, progress, lease, ``enqueued_at`` or ``supermap_result``. Transitions:

    accept ──> claim ──> (renew_lease, write_progress)* ──> succeed | fail
    accept ──> dismiss          claim ──> dismiss / fail / (lease expiry) claim again
    claim ──> fan_out ──> chunk_done* ──> claim (the last chunk finalises) ──> succeed | fail
    record_inline: an analysis computed in the API process, inserted already successful

``accept`` stamps ``enqueued_at`` (``clear_enqueued`` if the send after commit fails; the sweeper re-sends).

A worker *claims* a task (``accepted``, or ``running`` with an expired lease, or held by a dead process on
this host) by taking a lease under a fresh owner token and incrementing ``attempts``. Progress, lease
renewal and the final write are all conditional on still holding that token, so a stale attempt can never
overwrite a newer one. Final statuses (``FINAL_STATUSES``) are never left. Reads here never write.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Row, func, select, text
from sqlalchemy.orm import Session

from geoservice.db.models import AnalysisResult, AnalysisTask
from geoservice.db.models.task import ACTIVE_STATUSES, TaskStatus
from geoservice.iserver.payloads import dismissed_result, failure_result

ACCEPTED, RUNNING, SUCCESSFUL = TaskStatus.accepted.value, TaskStatus.running.value, TaskStatus.successful.value
FAILED, DISMISSED = TaskStatus.failed.value, TaskStatus.dismissed.value
_ACTIVE = ", ".join(f"'{s}'" for s in sorted(ACTIVE_STATUSES))
# A task with an equivalent SuperMap request records the iServer body of its outcome too.


def _supermap_outcome(table: str = "") -> str:
    """SET clause: the iServer body ``:smr`` of the outcome, for a task with an iServer request (a JSONB
    column given None holds JSON null, not SQL NULL: both mean "no request")."""
    return (f"supermap_result = CASE WHEN coalesce(jsonb_typeof({table}supermap_request), 'null') = 'null' "
            f"THEN {table}supermap_result ELSE CAST(:smr AS jsonb) END")


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
    supermap_request: dict[str, Any] | None


# --- creating tasks ------------------------------------------------------------------------------------

def accept(session: Session, **values: Any) -> AnalysisTask:
    """Insert a task ``accepted``, stamped as sent: the session's owner sends it once the transaction commits
    (and clears the stamp if that fails: ``clear_enqueued``)."""
    task = AnalysisTask(**values, status=ACCEPTED, progress=0, phase=ACCEPTED, enqueued_at=func.now())
    session.add(task)
    session.flush()
    return task


_RECORD_INLINE = text(f"""
WITH task AS (
    INSERT INTO analysis_tasks (id, name, description, analysis_type, parameters, status, progress, phase, attempts,
                                max_attempts, queue, created_by, started_at, completed_at, supermap_request,
                                supermap_result, result_dataset_id)
    VALUES (:id, :name, :description, :analysis_type, CAST(:parameters AS jsonb), '{SUCCESSFUL}', 100, '{SUCCESSFUL}',
            1, :max_attempts, :queue, :created_by, :started_at, clock_timestamp(), CAST(:supermap_request AS jsonb),
            CAST(:supermap_result AS jsonb), :result_dataset_id)
    RETURNING id)
INSERT INTO analysis_results (task_id, result_type, data, result_metadata, dataset_id)
SELECT id, :result_type, CAST(:data AS jsonb), CAST(:result_metadata AS jsonb), :result_dataset_id FROM task
""")


@dataclass(frozen=True)
class InlineRecord:
    """What ``record_inline`` stores: the task row's values, and its one result row."""

    id: uuid.UUID
    name: str
    description: str | None
    analysis_type: str
    parameters: dict[str, Any]
    created_by: uuid.UUID
    max_attempts: int
    queue: str
    started_at: Any
    supermap_request: Any
    supermap_result: Any
    result_dataset_id: uuid.UUID | None
    result_type: str
    data: dict[str, Any]
    result_metadata: dict[str, Any]


def record_inline(session: Session, record: InlineRecord) -> None:
    """Insert an analysis computed in the calling process, already ``successful``, with its result row (one
    statement: an in-process run pays one round trip for its record)."""
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    for key in ("parameters", "supermap_request", "supermap_result", "data", "result_metadata"):
        values[key] = _json(values[key], default=str)
    session.execute(_RECORD_INLINE, values)


def clear_enqueued(session: Session, task_id: uuid.UUID) -> None:
    """Record that an accepted task's send failed: the sweeper sends it after the grace period."""
    session.execute(text(f"UPDATE analysis_tasks SET enqueued_at = NULL WHERE id = :id AND status = '{ACCEPTED}'"),
                    {"id": task_id})


def mark_enqueued(session: Session, task_ids: Sequence[uuid.UUID]) -> int:
    """Record that these tasks reached the broker (only while they are still to run)."""
    if not task_ids:
        return 0
    result = session.execute(text(f"UPDATE analysis_tasks SET enqueued_at = now() "
                                  f"WHERE id = ANY(:ids) AND status IN ({_ACTIVE})"), {"ids": list(task_ids)})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- running them --------------------------------------------------------------------------------------

#: ``lease_owner`` of a task whose chunks are running (issue #11): no single process holds it, its chunks
#: have leases of their own, and it is claimed again (not counting an attempt) once they are all done.
FANNED_OUT = "fan-out"

_CLAIM = text(f"""
UPDATE analysis_tasks
   SET status = '{RUNNING}', attempts = attempts + CASE WHEN lease_owner = '{FANNED_OUT}' THEN 0 ELSE 1 END,
       lease_owner = :owner, lease_expires_at = now() + make_interval(secs => :lease),
       started_at = coalesce(started_at, now()),
       phase = CASE WHEN lease_owner = '{FANNED_OUT}' THEN 'storing' ELSE 'starting' END,
       updated_at = now(), error_message = NULL, error_code = NULL
 WHERE id = :id AND cancel_requested_at IS NULL
   AND (status = '{ACCEPTED}'
        OR (status = '{RUNNING}' AND (lease_expires_at < now() OR lease_owner = ANY(:dead_owners)))
        OR (status = '{RUNNING}' AND lease_owner = '{FANNED_OUT}' AND chunks_done >= chunks_total))
RETURNING attempts, max_attempts, analysis_type, parameters, created_by, name, supermap_request
""")


def current_lease_owner(session: Session, task_id: uuid.UUID) -> str | None:
    """Return who holds a running task's lease (None when the task is not running)."""
    return session.execute(
        text(f"SELECT lease_owner FROM analysis_tasks WHERE id = :id AND status = '{RUNNING}'"), {"id": task_id}
    ).scalar()


def claim(session: Session, task_id: uuid.UUID, owner: str, lease_s: int, dead_owners: Sequence[str]) -> Claim | None:
    """Take the task for ``owner``; None when another live attempt holds it or it is finished."""
    row = session.execute(
        _CLAIM, {"id": task_id, "owner": owner, "lease": lease_s, "dead_owners": list(dead_owners)}
    ).one_or_none()
    if row is None:
        return None
    return Claim(task_id, owner, row.attempts, row.max_attempts, row.analysis_type, row.parameters,
                 row.created_by, row.name, row.supermap_request)


def renew_lease(session: Session, task_id: uuid.UUID, owner: str, lease_s: int) -> bool:
    """Extend the lease; False when the lease was lost or the task was cancelled."""
    row = session.execute(
        text("UPDATE analysis_tasks SET lease_expires_at = now() + make_interval(secs => :lease) "
             f"WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' RETURNING 1"),
        {"id": task_id, "owner": owner, "lease": lease_s},
    ).one_or_none()
    return row is not None


def write_progress(session: Session, task_id: uuid.UUID, owner: str, progress: float, phase: str) -> bool:
    """Record progress (0-100) and phase while holding the lease."""
    row = session.execute(
        text("UPDATE analysis_tasks SET progress = :p, phase = :phase, updated_at = now() "
             f"WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' RETURNING 1"),
        {"id": task_id, "owner": owner, "p": round(min(max(progress, 0.0), 100.0), 2), "phase": phase},
    ).one_or_none()
    return row is not None


def fan_out(session: Session, task_id: uuid.UUID, owner: str, chunks_total: int) -> bool:
    """Hand a claimed task over to its ``chunks_total`` chunks (its plan is written in the same transaction)."""
    row = session.execute(
        text(f"UPDATE analysis_tasks SET lease_owner = '{FANNED_OUT}', lease_expires_at = NULL, chunks_done = 0, "
             "chunks_total = :n, phase = 'computing', progress = 10, updated_at = now() "
             f"WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' RETURNING 1"),
        {"id": task_id, "owner": owner, "n": chunks_total},
    ).one_or_none()
    return row is not None


def chunk_done(session: Session, task_id: uuid.UUID, work_done: float) -> tuple[int, int] | None:
    """Count one more successful chunk (under the task row's lock, so exactly one caller sees the last one);
    progress is the share of the work done (0-1). Returns (done, total), None if the task is not fanned out."""
    row = session.execute(
        text("UPDATE analysis_tasks SET chunks_done = chunks_done + 1, updated_at = now(), "
             "progress = round(CAST(10 + 85 * least(greatest(:w, 0), 1) AS numeric), 2) "
             f"WHERE id = :id AND status = '{RUNNING}' AND lease_owner = '{FANNED_OUT}' "
             "RETURNING chunks_done, chunks_total"),
        {"id": task_id, "w": work_done},
    ).one_or_none()
    return None if row is None else (int(row[0]), int(row[1]))


def lock_if_holding(session: Session, task_id: uuid.UUID, owner: str) -> AnalysisTask | None:
    """Lock the task row for the final write, if ``owner`` still holds a running lease on it."""
    return session.execute(
        select(AnalysisTask)
        .where(AnalysisTask.id == task_id, AnalysisTask.lease_owner == owner, AnalysisTask.status == RUNNING)
        .with_for_update()
    ).scalar_one_or_none()


# --- ending them ---------------------------------------------------------------------------------------

def succeed(session: Session, task_id: uuid.UUID, owner: str, *, result_dataset_id: uuid.UUID | None,
            supermap_result: Any) -> bool:
    """Mark the task ``successful`` with its result, if ``owner`` still holds it (lock it first:
    ``lock_if_holding``)."""
    row = session.execute(
        text(f"UPDATE analysis_tasks SET status = '{SUCCESSFUL}', phase = '{SUCCESSFUL}', progress = 100, "
             "completed_at = clock_timestamp(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL, "
             "error_message = NULL, error_code = NULL, result_dataset_id = :ds, " + _supermap_outcome() + " "
             f"WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' RETURNING 1"),
        {"id": task_id, "owner": owner, "ds": result_dataset_id, "smr": _json(supermap_result)},
    ).one_or_none()
    session.expire_all()
    return row is not None


def fail(session: Session, task_id: uuid.UUID, message: str, code: str, *, owner: str | None = None) -> bool:
    """Mark the task ``failed`` when ``owner`` (or, with None, anyone) still holds it, or it never started."""
    row = session.execute(
        text(f"UPDATE analysis_tasks SET status = '{FAILED}', error_message = :m, error_code = :c, "
             f"phase = '{FAILED}', completed_at = clock_timestamp(), updated_at = now(), lease_owner = NULL, "
             "lease_expires_at = NULL, " + _supermap_outcome() + " "
             f"WHERE id = :id AND status IN ({_ACTIVE}) AND (CAST(:owner AS text) IS NULL OR lease_owner = :owner) "
             "RETURNING 1"),
        {"id": task_id, "owner": owner, "m": message, "c": code, "smr": _json(failure_result(code, message))},
    ).one_or_none()
    return row is not None


def dismiss(session: Session, task_id: uuid.UUID) -> str | None:
    """Dismiss an accepted or running task; return the status it had (None if it was already final)."""
    row = session.execute(
        text(f"UPDATE analysis_tasks t SET status = '{DISMISSED}', cancel_requested_at = now(), "
             f"phase = '{DISMISSED}', completed_at = clock_timestamp(), updated_at = now(), lease_owner = NULL, "
             "lease_expires_at = NULL, " + _supermap_outcome("t.") + " "
             "FROM (SELECT id, status FROM analysis_tasks WHERE id = :id FOR UPDATE) old "
             f"WHERE t.id = old.id AND old.status IN ({_ACTIVE}) RETURNING old.status"),
        {"id": task_id, "smr": _json(dismissed_result())},
    ).one_or_none()
    return None if row is None else str(row[0])


def fail_exhausted(session: Session, queue: str) -> int:
    """Fail running tasks of ``queue`` whose lease expired on their last allowed attempt."""
    rows = session.execute(
        text(f"SELECT id, attempts FROM analysis_tasks WHERE queue = :q AND status = '{RUNNING}' "
             "AND lease_expires_at < now() AND attempts >= max_attempts FOR UPDATE SKIP LOCKED"),
        {"q": queue},
    ).all()
    for task_id, attempts in rows:
        fail(session, task_id, f"gave up after {attempts} attempts: the worker running it was lost each time",
             "MaxAttemptsExceeded")
    return len(rows)


def _json(value: Any, default: Any = None) -> str | None:
    return None if value is None else orjson.dumps(value, default=default,
                                                   option=orjson.OPT_SERIALIZE_NUMPY).decode()


# --- results and reads ---------------------------------------------------------------------------------

def add_result(session: Session, **values: Any) -> AnalysisResult:
    result = AnalysisResult(**values)
    session.add(result)
    session.flush()
    return result


def results_for(session: Session, task_id: uuid.UUID) -> Sequence[AnalysisResult]:
    return session.execute(
        select(AnalysisResult).where(AnalysisResult.task_id == task_id).order_by(AnalysisResult.created_at)
    ).scalars().all()


def get(session: Session, task_id: uuid.UUID) -> AnalysisTask | None:
    return session.get(AnalysisTask, task_id)


def snapshot(session: Session, task_id: uuid.UUID) -> Row[Any] | None:
    """The fields a follower of the task watches (one small query)."""
    return session.execute(
        select(AnalysisTask.id, AnalysisTask.created_by, AnalysisTask.status, AnalysisTask.progress,
               AnalysisTask.phase, AnalysisTask.error_code, AnalysisTask.error_message,
               AnalysisTask.result_dataset_id, AnalysisTask.updated_at, AnalysisTask.chunks_total,
               AnalysisTask.chunks_done).where(AnalysisTask.id == task_id)
    ).one_or_none()


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


def sweep_candidates(session: Session, queue: str, accepted_grace_s: int, limit: int = 500
                     ) -> list[tuple[uuid.UUID, str]]:
    """Tasks of ``queue`` to (re-)send: accepted but not sent within the grace period (or sent that long
    ago and still waiting), and running with an expired lease (not re-sent more often than the grace)."""
    rows = session.execute(
        text("SELECT id, status FROM analysis_tasks WHERE queue = :q AND "
             "coalesce(enqueued_at, created_at) < now() - make_interval(secs => :g) AND "
             f"(status = '{ACCEPTED}' OR (status = '{RUNNING}' AND lease_expires_at < now()) "
             # a fanned-out task whose chunks are all done but that nobody finalised (its worker died)
             f"OR (status = '{RUNNING}' AND lease_owner = '{FANNED_OUT}' AND chunks_done >= chunks_total "
             "AND updated_at < now() - make_interval(secs => :g))) "
             "ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED"),
        {"q": queue, "g": accepted_grace_s, "limit": limit},
    ).all()
    return [(r[0], r[1]) for r in rows]
