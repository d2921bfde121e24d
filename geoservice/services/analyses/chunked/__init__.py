"""Chunked execution (issue #11): a large task as many chunks over every worker, memory bounded by a chunk.

``plan`` decides and writes the plan; a worker then repeatedly claims the fairest runnable chunk
(``db/repositories/chunks.claim_next``), ``load``s only its rows, ``compute``s, and ``store``s its output and
its ``successful`` in one transaction; the one that stores the last chunk ``finalise``s the task.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import tasks as tasks_repo
from geoservice.db.repositories.chunks import ChunkClaim
from geoservice.services.analyses.chunked.finalise import finalise
from geoservice.services.analyses.chunked.plan import plan, strategy_of
from geoservice.services.analyses.chunked.run import Loaded, Output, compute, load, write

__all__ = ["ChunkClaim", "Loaded", "Output", "compute", "finalise", "load", "plan", "store", "strategy_of"]


def store(session: Session, claim: ChunkClaim, loaded: Loaded, output: Output) -> tuple[int, int] | None:
    """Write the chunk's output and mark it successful, if its lease is still held; return the task's
    (chunks done, chunks total) after it, or None when the chunk was lost (nothing is written)."""
    if not chunks_repo.lock_if_holding(session, claim.chunk_id, claim.owner):
        return None
    count, summary = write(session, claim, loaded, output)
    summary["worker"] = claim.owner.rsplit(":", 1)[0]  # host:pid that ran it
    if not chunks_repo.complete(session, claim.chunk_id, claim.owner, count, summary):
        return None
    return tasks_repo.chunk_done(session, claim.task_id, chunks_repo.work_done(session, claim.task_id))
