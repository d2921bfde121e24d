"""The one owner of chunk state (``analysis_plans``, ``analysis_chunks``): compare-and-set transitions, as for tasks.

A chunk is claimed with a lease under a fresh owner token, like a task; its output and its ``successful`` are
written in one transaction, only while the lease is held, so a chunk's rows are committed exactly once.
Which chunk a worker takes next is decided here: the runnable chunk of the user with the fewest chunks
running (then the one waiting longest), so a user with a thousand queued chunks does not starve one with one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from geoservice.db.models import AnalysisChunk, AnalysisPlan
from geoservice.db.models.task import TaskStatus

ACCEPTED, RUNNING, SUCCESSFUL = TaskStatus.accepted.value, TaskStatus.running.value, TaskStatus.successful.value
FAILED, DISMISSED = TaskStatus.failed.value, TaskStatus.dismissed.value
_RUNNABLE = (f"(c.status = '{ACCEPTED}' OR (c.status = '{RUNNING}' AND (c.lease_expires_at < now() "
             "OR c.lease_owner = ANY(:dead))))")


@dataclass(frozen=True)
class ChunkClaim:
    """A claimed chunk with what running it needs: its features, its task's request and its plan."""

    chunk_id: uuid.UUID
    task_id: uuid.UUID
    owner: str
    attempt: int
    max_attempts: int
    seq: int
    side: str
    fids: list[int]
    bbox: list[float] | None
    feature_count: int
    analysis_type: str
    parameters: dict[str, Any]
    created_by: uuid.UUID
    plan: AnalysisPlan


def add_plan(session: Session, plan: AnalysisPlan, chunks: Sequence[dict[str, Any]]) -> None:
    """Write a task's plan and its chunks (``accepted``)."""
    session.add(plan)
    session.flush()
    session.execute(insert(AnalysisChunk), [{**c, "status": ACCEPTED} for c in chunks])


def get_plan(session: Session, task_id: uuid.UUID) -> AnalysisPlan | None:
    return session.get(AnalysisPlan, task_id)


def running_owners(session: Session, host: str) -> list[str]:
    """Lease owners of running chunks on ``host`` (the caller checks which of their processes died)."""
    return list(session.execute(
        text(f"SELECT DISTINCT lease_owner FROM analysis_chunks WHERE status = '{RUNNING}' AND lease_owner LIKE :h"),
        {"h": f"{host}:%"}).scalars())


_OWNERS = text(f"""
SELECT c.owner_id FROM analysis_chunks c JOIN analysis_tasks t ON t.id = c.task_id
 WHERE t.queue = :q AND t.status = '{RUNNING}' AND c.status IN ('{ACCEPTED}', '{RUNNING}')
 GROUP BY c.owner_id
 ORDER BY count(*) FILTER (WHERE c.status = '{RUNNING}' AND c.lease_expires_at >= now()), min(c.created_at)
""")
_NEXT = text(f"""
SELECT c.id FROM analysis_chunks c JOIN analysis_tasks t ON t.id = c.task_id
 WHERE c.owner_id = :o AND t.queue = :q AND t.status = '{RUNNING}' AND {_RUNNABLE}
 ORDER BY c.created_at, c.task_id, c.seq LIMIT 1 FOR UPDATE OF c SKIP LOCKED
""")
_TAKE = text(f"""
UPDATE analysis_chunks c SET status = '{RUNNING}', attempts = c.attempts + 1, lease_owner = :owner,
       lease_expires_at = now() + make_interval(secs => :lease), started_at = coalesce(c.started_at, now()),
       updated_at = now(), error_code = NULL, error_message = NULL
  FROM analysis_tasks t
 WHERE c.id = :id AND t.id = c.task_id
RETURNING c.task_id, c.attempts, c.max_attempts, c.seq, c.side, c.fids, c.bbox, c.feature_count,
          t.analysis_type, t.parameters, t.created_by
""")


def claim_next(session: Session, queue: str, owner: str, lease_s: int, dead: Sequence[str]) -> ChunkClaim | None:
    """Take the next chunk to run in ``queue``, fairly across users; None when there is none."""
    for owner_id in session.execute(_OWNERS, {"q": queue}).scalars().all():
        chunk_id = session.execute(_NEXT, {"o": owner_id, "q": queue, "dead": list(dead)}).scalar()
        if chunk_id is None:
            continue  # its runnable chunks are being taken by others right now
        row = session.execute(_TAKE, {"id": chunk_id, "owner": owner, "lease": lease_s}).one()
        plan = session.get(AnalysisPlan, row.task_id)
        assert plan is not None
        return ChunkClaim(chunk_id, row.task_id, owner, row.attempts, row.max_attempts, row.seq, row.side,
                          list(row.fids), row.bbox, row.feature_count, row.analysis_type, row.parameters,
                          row.created_by, plan)
    return None


def renew(session: Session, chunk_id: uuid.UUID, owner: str, lease_s: int) -> bool:
    """Extend the chunk's lease; False when it was lost (taken over, dismissed or failed)."""
    row = session.execute(
        text("UPDATE analysis_chunks SET lease_expires_at = now() + make_interval(secs => :lease) "
             f"WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' RETURNING 1"),
        {"id": chunk_id, "owner": owner, "lease": lease_s}).one_or_none()
    return row is not None


def lock_if_holding(session: Session, chunk_id: uuid.UUID, owner: str) -> bool:
    """Lock the chunk for its final write, if ``owner`` still holds it (others then wait for this commit)."""
    return session.execute(
        text(f"SELECT 1 FROM analysis_chunks WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' "
             "FOR UPDATE"), {"id": chunk_id, "owner": owner}).one_or_none() is not None


def complete(session: Session, chunk_id: uuid.UUID, owner: str, output_count: int, summary: dict[str, Any]
             ) -> bool:
    """Mark the chunk successful with its share of the summary (its rows are written in this transaction)."""
    row = session.execute(
        text(f"UPDATE analysis_chunks SET status = '{SUCCESSFUL}', completed_at = clock_timestamp(), "
             "updated_at = now(), lease_owner = NULL, lease_expires_at = NULL, output_count = :n, "
             f"summary = CAST(:s AS jsonb) WHERE id = :id AND lease_owner = :owner AND status = '{RUNNING}' "
             "RETURNING 1"),
        {"id": chunk_id, "owner": owner, "n": output_count, "s": _json(summary)}).one_or_none()
    return row is not None


def work_done(session: Session, task_id: uuid.UUID) -> float:
    """Share (0-1) of the task's features whose chunks are successful."""
    done, total = session.execute(
        text(f"SELECT coalesce(sum(feature_count) FILTER (WHERE status = '{SUCCESSFUL}'), 0), "
             "coalesce(sum(feature_count), 0) FROM analysis_chunks WHERE task_id = :t"), {"t": task_id}).one()
    return float(done) / float(total) if total else 1.0


def fail(session: Session, chunk_id: uuid.UUID, message: str, code: str, owner: str | None = None) -> bool:
    """Mark a running chunk failed (``owner`` None: whoever holds it)."""
    row = session.execute(
        text(f"UPDATE analysis_chunks SET status = '{FAILED}', completed_at = clock_timestamp(), updated_at = now(), "
             "lease_owner = NULL, lease_expires_at = NULL, error_code = :c, error_message = :m WHERE id = :id "
             f"AND status IN ('{ACCEPTED}', '{RUNNING}') AND (CAST(:owner AS text) IS NULL OR lease_owner = :owner) "
             "RETURNING 1"), {"id": chunk_id, "owner": owner, "c": code, "m": message}).one_or_none()
    return row is not None


def dismiss_for_task(session: Session, task_id: uuid.UUID) -> int:
    """Dismiss every chunk of a task that is not final yet (the task was dismissed or failed)."""
    result = session.execute(
        text(f"UPDATE analysis_chunks SET status = '{DISMISSED}', completed_at = clock_timestamp(), "
             "updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
             f"WHERE task_id = :t AND status IN ('{ACCEPTED}', '{RUNNING}')"),
        {"t": task_id})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def outputs(session: Session, task_id: uuid.UUID) -> list[tuple[int, str, int, dict[str, Any]]]:
    """``(seq, side, output_count, summary)`` of the task's chunks, in order."""
    rows = session.execute(select(AnalysisChunk.seq, AnalysisChunk.side, AnalysisChunk.output_count,
                                  AnalysisChunk.summary).where(AnalysisChunk.task_id == task_id)
                           .order_by(AnalysisChunk.seq))
    return [(r[0], r[1], int(r[2] or 0), r[3] or {}) for r in rows]


def sweep(session: Session, queue: str, grace_s: int) -> int:
    """Runnable chunks of ``queue`` nobody took within the grace period (their wake-up was lost, or their worker
    died): stamps them as woken again and returns how many wake-ups to send."""
    result = session.execute(text(f"""
        UPDATE analysis_chunks c SET enqueued_at = now() FROM analysis_tasks t
         WHERE t.id = c.task_id AND t.queue = :q AND t.status = '{RUNNING}'
           AND coalesce(c.enqueued_at, c.created_at) < now() - make_interval(secs => :g)
           AND (c.status = '{ACCEPTED}' OR (c.status = '{RUNNING}' AND c.lease_expires_at < now()))"""),
        {"q": queue, "g": grace_s})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def exhausted(session: Session, queue: str) -> list[tuple[uuid.UUID, uuid.UUID, int, int, int]]:
    """Running chunks whose lease expired on their last allowed attempt: ``(chunk, task, seq, total, attempts)``."""
    rows = session.execute(text(f"""
        SELECT c.id, c.task_id, c.seq, t.chunks_total, c.attempts FROM analysis_chunks c
          JOIN analysis_tasks t ON t.id = c.task_id
         WHERE t.queue = :q AND c.status = '{RUNNING}' AND c.lease_expires_at < now()
           AND c.attempts >= c.max_attempts FOR UPDATE OF c SKIP LOCKED"""), {"q": queue}).all()
    return [(r[0], r[1], int(r[2]), int(r[3] or 0), int(r[4])) for r in rows]


def stale_stages(session: Session, limit: int = 20) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """Plans of failed or dismissed tasks whose staging table may still exist: ``(task, table, dataset)``."""
    rows = session.execute(text(f"""
        SELECT p.task_id, p.stage_table, p.result_dataset_id FROM analysis_plans p
          JOIN analysis_tasks t ON t.id = p.task_id
         WHERE p.cleaned_at IS NULL AND p.finalised_at IS NULL AND t.status IN ('{FAILED}', '{DISMISSED}')
         LIMIT :n FOR UPDATE OF p SKIP LOCKED"""), {"n": limit}).all()
    return [(r[0], r[1], r[2]) for r in rows]


def mark_cleaned(session: Session, task_id: uuid.UUID) -> None:
    session.execute(text("UPDATE analysis_plans SET cleaned_at = now() WHERE task_id = :t"), {"t": task_id})


def mark_finalised(session: Session, task_id: uuid.UUID) -> None:
    session.execute(text("UPDATE analysis_plans SET finalised_at = now() WHERE task_id = :t"), {"t": task_id})


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
