"""``follow``: the one waiter for a task's final status; SSE, MCP progress and SuperMap waits build on it.

It polls the task row (the source of truth) in a short transaction each time, holding no connection while
it sleeps, starting fast (50 ms) and backing off to ``interval``, so a small task is seen finished at once
and a long one costs one small query per ``interval``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.orm import Session, sessionmaker

from geoservice.db.models.task import FINAL_STATUSES
from geoservice.db.repositories import tasks as repo
from geoservice.errors import NotFound
from geoservice.services.access import Principal, can_change

FIRST_POLL_S = 0.05


@dataclass(frozen=True)
class Snapshot:
    """What a follower sees of a task."""

    id: uuid.UUID
    status: str
    progress: float
    phase: str | None
    error_code: str | None
    error_message: str | None
    result_dataset_id: uuid.UUID | None
    updated_at: datetime
    chunks_total: int | None = None
    chunks_done: int = 0

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (the task event stream's ``data``)."""
        return {"id": str(self.id), "status": self.status, "progress": self.progress, "phase": self.phase,
                "error_code": self.error_code, "error_message": self.error_message,
                "result_dataset_id": str(self.result_dataset_id) if self.result_dataset_id else None,
                "chunks_total": self.chunks_total, "chunks_done": self.chunks_done,
                "updated_at": self.updated_at.isoformat()}


def read_snapshot(factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID) -> Snapshot:
    """The task as it is now (NotFound when it is not the principal's)."""
    with factory() as session:
        row = repo.snapshot(session, task_id)
    if row is None or not can_change(row.created_by, principal):
        raise NotFound(f"task {task_id} not found", field="task_id")
    return Snapshot(row.id, row.status, float(row.progress or 0), row.phase, row.error_code, row.error_message,
                    row.result_dataset_id, row.updated_at, row.chunks_total, int(row.chunks_done or 0))


async def follow(factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID, *,
                 interval: float = 0.5, timeout: float | None = None,
                 heartbeat: float | None = None) -> AsyncIterator[Snapshot | None]:
    """Yield the task's snapshot now and whenever its status, progress or phase changes, ending after the final one.

    Args:
        interval: the longest pause between two reads of the task (seconds).
        timeout: stop following after this many seconds (the last snapshot yielded is then not final).
        heartbeat: yield None after this many seconds without a change (SSE keep-alives, MCP heartbeats).

    Raises:
        NotFound: the task is not the principal's (checked at every read).
    """
    started = time.monotonic()
    quiet_since, last, delay = started, None, min(FIRST_POLL_S, interval)
    while True:
        snap = await anyio.to_thread.run_sync(read_snapshot, factory, principal, task_id)
        now = time.monotonic()
        key = (snap.status, snap.progress, snap.phase, snap.chunks_done)
        if key != last:
            last, quiet_since = key, now
            yield snap
        elif heartbeat is not None and now - quiet_since >= heartbeat:
            quiet_since = now
            yield None
        if snap.final:
            return
        remaining = None if timeout is None else started + timeout - now
        if remaining is not None and remaining <= 0:
            return
        await anyio.sleep(delay if remaining is None else min(delay, remaining))
        delay = min(delay * 1.5, interval)


async def wait_final(factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID, *,
                     timeout: float, interval: float = 0.5) -> Snapshot | None:
    """The task's final snapshot, or None when it is not final within ``timeout`` seconds."""
    final = None
    async for snap in follow(factory, principal, task_id, interval=interval, timeout=timeout):
        if snap is not None and snap.final:
            final = snap
    return final
