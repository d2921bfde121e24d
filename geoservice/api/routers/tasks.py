"""Task routes: submit, read, list, results, cancel, and a server-sent event stream of progress."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from geoservice.api.deps import CurrentUser, RequestInfoDep, SessionDep, SessionmakerDep, SettingsDep
from geoservice.api.schemas.common import Page
from geoservice.api.schemas.tasks import ResultRead, TaskCreate, TaskRead, TaskResults
from geoservice.db.models import AnalysisTask, TaskStatus
from geoservice.db.models.task import FINAL_STATUSES
from geoservice.db.repositories import tasks as repo
from geoservice.errors import Conflict
from geoservice.services import auth as auth_service
from geoservice.services import tasks as service
from geoservice.services.access import Principal

router = APIRouter(prefix="/tasks", tags=["tasks"])


def _read(request: Request, task: AnalysisTask) -> TaskRead:
    out = TaskRead.model_validate(task)
    base = str(request.url_for("get_task", task_id=str(task.id)))
    out.links = {"self": base, "results": f"{base}/results", "events": f"{base}/events", "cancel": f"{base}/cancel"}
    if task.result_dataset_id:
        out.links["dataset"] = str(request.url_for("get_dataset", dataset_id=str(task.result_dataset_id)))
    return out


@router.post("", status_code=202, response_model=TaskRead)
def submit_task(body: TaskCreate, request: Request, response: Response, session: SessionDep,
                settings: SettingsDep, principal: CurrentUser, info: RequestInfoDep) -> TaskRead:
    """Submit an analysis; it runs on a worker. Poll ``Location`` or stream ``.../events``."""
    task = service.submit(session, settings, principal, name=body.name, description=body.description,
                          analysis_type=body.analysis_type, parameters=body.parameters)
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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[TaskRead]:
    """List your tasks, newest first, optionally by status and type."""
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    if scope == "all":
        principal.require_admin()
    owner = None if scope == "all" else principal.user_id
    rows, total = repo.list_page(session, owner, status=status, analysis_type=analysis_type, limit=limit,
                                 offset=offset)
    links = {}
    if offset + limit < total:
        links["next"] = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    return Page[TaskRead](data=[_read(request, t) for t in rows], count=total, limit=limit, offset=offset,
                          links=links)


@router.get("/{task_id}", response_model=TaskRead, name="get_task")
def get_task(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> TaskRead:
    """Status, progress (0-100), phase, timestamps and error of one task."""
    return _read(request, service.get_task(session, task_id, principal))


@router.get("/{task_id}/results", response_model=TaskResults)
def get_results(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> TaskResults:
    """The task's ``analysis_results`` rows, with links to the result dataset."""
    task = service.get_task(session, task_id, principal)
    results = []
    for row in repo.results_for(session, task.id):
        item = ResultRead.model_validate(row)
        if row.dataset_id:
            ds = str(request.url_for("get_dataset", dataset_id=str(row.dataset_id)))
            item.links = {"dataset": ds, "features": f"{ds}/features", "export": f"{ds}/export?format=geojson"}
        results.append(item)
    return TaskResults(task=_read(request, task), results=results)


@router.post("/{task_id}/cancel", response_model=TaskRead)
def cancel_task(request: Request, task_id: uuid.UUID, session: SessionDep, principal: CurrentUser,
                info: RequestInfoDep) -> TaskRead:
    """Dismiss a task: an accepted one never starts, a running one is stopped and stores nothing."""
    task, previous = service.cancel(session, task_id, principal)
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
    await run_in_threadpool(_snapshot, factory, task_id, principal)  # 404 before the stream starts
    return StreamingResponse(_events(request, factory, task_id, principal, interval), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _snapshot(factory: sessionmaker[Session], task_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
    with factory() as session:
        task = service.get_task(session, task_id, principal)
        return {"id": str(task.id), "status": task.status, "progress": float(task.progress), "phase": task.phase,
                "error_message": task.error_message, "updated_at": task.updated_at.isoformat()}


async def _events(request: Request, factory: sessionmaker[Session], task_id: uuid.UUID, principal: Principal,
                  interval: float) -> AsyncIterator[bytes]:
    last: tuple[Any, ...] | None = None
    seq = 0
    idle = 0.0
    while not await request.is_disconnected():
        snap = await run_in_threadpool(_snapshot, factory, task_id, principal)
        key = (snap["status"], snap["progress"], snap["phase"])
        final = snap["status"] in FINAL_STATUSES
        if key != last:
            seq += 1
            last = key
            kind = "final" if final else "progress"
            yield f"id: {seq}\nevent: {kind}\ndata: ".encode() + orjson.dumps(snap) + b"\n\n"
            idle = 0.0
        if final:
            return
        idle += interval
        if idle >= 15:
            idle = 0.0
            yield b": keep-alive\n\n"
        await asyncio.sleep(interval)
