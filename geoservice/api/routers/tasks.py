"""Task routes: submit, read, list, results, cancel, and a server-sent event stream of progress.

An adapter over ``services.analyses``: it parses the request, calls the service and renders ``TaskRead``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from geoservice.api.deps import CurrentUser, RequestInfoDep, SessionDep, SessionmakerDep, SettingsDep
from geoservice.api.schemas.common import MAX_OFFSET, Page
from geoservice.api.schemas.tasks import TASK_CREATE_SCHEMA, ResultRead, TaskEnvelope, TaskRead, TaskResults, task_body
from geoservice.db.models import AnalysisTask, TaskStatus
from geoservice.errors import Conflict
from geoservice.services import analyses
from geoservice.services import auth as auth_service
from geoservice.services.access import Principal
from geoservice.services.analyses.follow import read_snapshot

router = APIRouter(prefix="/tasks", tags=["tasks"])
KEEP_ALIVE_S = 15.0


def _read(request: Request, task: AnalysisTask) -> TaskRead:
    out = TaskRead.model_validate(task)
    base = str(request.url_for("get_task", task_id=str(task.id)))
    out.links = {"self": base, "results": f"{base}/results", "events": f"{base}/events", "cancel": f"{base}/cancel"}
    if task.result_dataset_id:
        out.links["dataset"] = str(request.url_for("get_dataset", dataset_id=str(task.result_dataset_id)))
    return out


@router.post("", status_code=202, response_model=TaskRead, openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": {"$ref": TASK_CREATE_SCHEMA}}}}})
def submit_task(request: Request, response: Response, session: SessionDep, settings: SettingsDep,
                principal: CurrentUser, info: RequestInfoDep,
                body: Annotated[TaskEnvelope, Depends(task_body)]) -> TaskRead:  # after CurrentUser: 401 first
    """Submit an analysis; it runs on a worker. Poll ``Location`` or stream ``.../events``.

    The body is a ``TaskCreate``: ``analysis_type`` selects the operation and the schema of ``parameters``.
    """
    prepared = analyses.prepare(session, principal, body.analysis_type, body.parameters,
                                plugins=settings.analysis_plugins)
    task = analyses.submit(session, settings, principal, prepared, name=body.name, description=body.description)
    auth_service.log_activity(session, "task_submitted", info, principal.user_id, task_id=str(task.id))
    out = _read(request, task)
    response.headers["Location"] = out.links["self"]
    return out


@router.get("", response_model=Page[TaskRead])
def list_tasks(
    request: Request,
    session: SessionDep,
    principal: CurrentUser,
    settings: SettingsDep,
    status: TaskStatus | None = None,
    analysis_type: str | None = None,
    scope: Annotated[Literal["own", "all"], Query(description="'all': every user's tasks (admins only)")] = "own",
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[TaskRead]:
    """List your tasks, newest first, optionally by status and type."""
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    rows, total = analyses.list_tasks(session, principal, everyone=scope == "all", status=status,
                                      analysis_type=analysis_type, limit=limit, offset=offset)
    links = {}
    if offset + limit < total:
        links["next"] = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    return Page[TaskRead](data=[_read(request, t) for t in rows], count=total, limit=limit, offset=offset,
                          links=links)


@router.get("/{task_id}", response_model=TaskRead, name="get_task")
def get_task(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> TaskRead:
    """Status, progress (0-100), phase, timestamps and error of one task."""
    return _read(request, analyses.get_task(session, task_id, principal))


@router.get("/{task_id}/results", response_model=TaskResults)
def get_results(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> TaskResults:
    """The task's ``analysis_results`` rows, with links to the result dataset."""
    found = analyses.result(session, principal, task_id)
    results = []
    for row in found.rows:
        item = ResultRead.model_validate(row)
        if row.dataset_id:
            ds = str(request.url_for("get_dataset", dataset_id=str(row.dataset_id)))
            item.links = {"dataset": ds, "features": f"{ds}/features", "export": f"{ds}/export?format=geojson"}
        results.append(item)
    return TaskResults(task=_read(request, found.task), results=results)


@router.post("/{task_id}/cancel", response_model=TaskRead)
def cancel_task(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser,
                info: RequestInfoDep) -> TaskRead:
    """Dismiss a task: an accepted one never starts, a running one is stopped and stores nothing."""
    task, previous = analyses.cancel(session, task_id, principal)
    if previous is not None:
        auth_service.log_activity(session, "task_cancelled", info, principal.user_id, task_id=str(task_id))
    if previous is None and task.status != TaskStatus.dismissed:
        raise Conflict(f"task: cannot cancel a task that is already {task.status}", field="task_id")
    return _read(request, task)


@router.get("/{task_id}/events")
async def task_events(
    request: Request, task_id: uuid.UUID, factory: SessionmakerDep, principal: CurrentUser,
    interval: Annotated[float, Query(ge=0.1, le=10)] = 0.5,
) -> StreamingResponse:
    """Server-sent events: a ``progress`` event whenever status/progress/phase change, then ``final``."""
    await anyio.to_thread.run_sync(read_snapshot, factory, principal, task_id)  # 404 before the stream starts
    return StreamingResponse(_events(request, factory, task_id, principal, interval), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, factory: sessionmaker[Session], task_id: uuid.UUID, principal: Principal,
                  interval: float) -> AsyncIterator[bytes]:
    seq = 0
    async for snap in analyses.follow(factory, principal, task_id, interval=interval, heartbeat=KEEP_ALIVE_S):
        if await request.is_disconnected():
            return
        if snap is None:
            yield b": keep-alive\n\n"
            continue
        seq += 1
        kind = "final" if snap.final else "progress"
        yield f"id: {seq}\nevent: {kind}\ndata: ".encode() + orjson.dumps(snap.as_dict()) + b"\n\n"
