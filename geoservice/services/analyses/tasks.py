"""Tasks on the workers: ``submit`` (enqueued after commit), ``get_task``, ``list_tasks``, ``result``, ``cancel``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db.models import AnalysisResult, AnalysisTask, Dataset
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.db.repositories import tasks as repo
from geoservice.errors import NotFound
from geoservice.iserver import payloads
from geoservice.queue import enqueue_after_commit, revoke_after_commit
from geoservice.services.access import Principal, can_change
from geoservice.services.analyses.prepare import Prepared

_BUILD: Any = object()


@dataclass(frozen=True)
class TaskResult:
    """A task with its result rows and its result dataset (None while it has none, or once deleted)."""

    task: AnalysisTask
    rows: Sequence[AnalysisResult]
    dataset: Dataset | None


def submit(session: Session, settings: Settings, principal: Principal, prepared: Prepared, *, name: str,
           description: str | None, supermap_request: Any = _BUILD) -> AnalysisTask:
    """Insert an ``accepted`` task and register it to be sent to the workers once the transaction commits.

    Inputs may be any datasets the principal can read (``prepare`` checked them); the output is theirs.
    ``supermap_request`` is the iServer request as received (default: the task's equivalent).
    """
    principal.require_write("submit analysis tasks")
    record = payloads.task_request(prepared.request, prepared.sources) if supermap_request is _BUILD \
        else supermap_request
    task = repo.accept(session, name=name, description=description, analysis_type=prepared.analysis_type,
                       parameters=prepared.request.parameters(), created_by=principal.user_id,
                       max_attempts=settings.task_max_attempts, queue=settings.task_queue, supermap_request=record)
    enqueue_after_commit(session, task.id)
    return task


def get_task(session: Session, task_id: uuid.UUID, principal: Principal) -> AnalysisTask:
    """Return the principal's task (any task for an admin) or raise NotFound."""
    task = repo.get(session, task_id)
    if task is None or not can_change(task.created_by, principal):
        raise NotFound(f"task {task_id} not found", field="task_id")
    return task


def list_tasks(session: Session, principal: Principal, *, everyone: bool, status: str | None,
               analysis_type: str | None, limit: int, offset: int) -> tuple[Sequence[AnalysisTask], int]:
    """One page of the principal's tasks (everyone's for an admin asking for it), newest first, and the total."""
    if everyone:
        principal.require_admin()
    return repo.list_page(session, None if everyone else principal.user_id, status=status,
                          analysis_type=analysis_type, limit=limit, offset=offset)


def result(session: Session, principal: Principal, task_id: uuid.UUID) -> TaskResult:
    """The one reader of results: the task, its ``analysis_results`` rows and its result dataset."""
    task = get_task(session, task_id, principal)
    rows = repo.results_for(session, task.id)
    dataset_id = task.result_dataset_id or next((r.dataset_id for r in rows if r.dataset_id), None)
    dataset = dataset_repo.get(session, dataset_id) if dataset_id else None
    return TaskResult(task, rows, dataset)


def cancel(session: Session, task_id: uuid.UUID, principal: Principal) -> tuple[AnalysisTask, str | None]:
    """Dismiss the task; return it and the status it was cancelled from (None: it was already final)."""
    get_task(session, task_id, principal)
    previous = repo.dismiss(session, task_id)
    if previous == "running":
        chunks_repo.dismiss_for_task(session, task_id)  # every chunk stops at its next lease renewal
        revoke_after_commit(session, task_id)
    session.expire_all()
    return get_task(session, task_id, principal), previous
