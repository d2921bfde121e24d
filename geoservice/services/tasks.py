"""Task use-cases: submit (validate with the worker's params model, insert, enqueue after commit), cancel."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from geoservice.analysis.params import InputRef
from geoservice.config import Settings
from geoservice.db.models import AnalysisTask
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.db.repositories import tasks as repo
from geoservice.errors import Conflict, InvalidInput, NotFound
from geoservice.queue import enqueue_after_commit, revoke_after_commit
from geoservice.services.access import Principal, can_change, can_read_dataset
from geoservice.services.operations import operations
from geoservice.supermap.payloads import supermap_request as build_supermap_request


def validate_parameters(analysis_type: str, parameters: Any, plugins: str = "") -> Any:
    """Validate ``parameters`` with the operation's params model (the one the worker uses)."""
    registry = operations(plugins)
    if analysis_type not in registry:
        raise InvalidInput(
            f"analysis_type: unknown analysis {analysis_type!r}; use one of {sorted(registry)}",
            field="analysis_type",
        )
    model = registry[analysis_type].params_model
    try:
        return model.model_validate(parameters)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(["parameters", *(str(p) for p in first["loc"])]) if first["loc"] else "parameters"
        problems = "; ".join(
            f"{'.'.join(['parameters', *(str(p) for p in e['loc'])])}: {e['msg']}" for e in errors[:5]
        )
        raise InvalidInput(problems, field=where) from exc


def submit(session: Session, settings: Settings, principal: Principal, *, name: str, description: str | None,
           analysis_type: str, parameters: Any, supermap_request: dict[str, Any] | None = None) -> AnalysisTask:
    """Insert an accepted task and register it to be enqueued once the transaction commits.

    Input datasets may be any the principal can read; the output belongs to the principal.
    """
    principal.require_write("submit analysis tasks")
    owner_id = principal.user_id
    params = validate_parameters(analysis_type, parameters, settings.analysis_plugins)
    op = operations(settings.analysis_plugins)[analysis_type]
    sources = {}
    for key in op.inputs:
        ref: InputRef = getattr(params, key)
        if ref.dataset_id is not None:
            dataset = dataset_repo.get(session, ref.dataset_id)
            if dataset is None or not can_read_dataset(session, dataset, principal):
                raise InvalidInput(f"parameters.{key}.dataset_id: unknown dataset {ref.dataset_id}",
                                   field=f"parameters.{key}.dataset_id")
            sources[key] = dataset
    output_name = getattr(params, "output_name", None)
    if output_name and dataset_repo.get_by_name(session, owner_id, output_name) is not None:
        raise Conflict(f"parameters.output_name: a dataset named {output_name!r} already exists",
                       field="parameters.output_name")
    task = AnalysisTask(
        name=name,
        description=description,
        analysis_type=analysis_type,
        parameters=params.model_dump(mode="json", exclude_none=True),
        created_by=owner_id,
        max_attempts=settings.task_max_attempts,
        queue=settings.task_queue,
        supermap_request=supermap_request or build_supermap_request(analysis_type, params, sources),
    )
    session.add(task)
    session.flush()
    enqueue_after_commit(session, task.id)
    return task


def get_task(session: Session, task_id: uuid.UUID, principal: Principal) -> AnalysisTask:
    """Return the principal's task (any task for an admin) or raise NotFound."""
    task = session.get(AnalysisTask, task_id)
    if task is None or not can_change(task.created_by, principal):
        raise NotFound(f"task {task_id} not found", field="task_id")
    return task


def cancel(session: Session, task_id: uuid.UUID, principal: Principal) -> tuple[AnalysisTask, str | None]:
    """Dismiss the task; return it and the status it was cancelled from (None: it was already final)."""
    get_task(session, task_id, principal)
    previous = repo.cancel(session, task_id)
    if previous == "running":
        revoke_after_commit(session, task_id)
    session.expire_all()
    return get_task(session, task_id, principal), previous
