"""Use-cases of the SuperMap iServer surface: record inline analyses, submit dataset analyses, serve results.

Every request is an ``analysis_tasks`` row: inline (geometry) analyses are computed in the API and stored
``successful``; dataset analyses are submitted to the workers with the native params models
(``services.tasks.submit``). ``supermap_request`` is ``{"service", "resource", "query", "body"}`` with the
body as received (normalised to strict JSON); ``supermap_result`` is the iServer result served for it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import shapely
from psycopg import sql
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db import gis_io
from geoservice.db.models import AnalysisTask, Dataset
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.errors import BadRequest
from geoservice.services import tasks as task_service
from geoservice.services.access import Principal, can_change
from geoservice.supermap import payloads
from geoservice.supermap.inline import Outcome
from geoservice.supermap.results import error_body, recordset

FINAL = {"successful", "failed", "dismissed"}
#: Task error codes that are the service's fault (500); any other failure is the request's (400).
SERVER_FAULTS = {"InternalError", "MaxAttemptsExceeded", "TimeLimitExceeded", None}
RETURN_MODES = ("DATASET_ONLY", "RECORDSET_ONLY", "DATASET_AND_RECORDSET")
DEFAULT_EXPECT_COUNT = 1000
MAX_EXPECT_COUNT = 100_000


@dataclass(frozen=True)
class View:
    """An HTTP answer on the SuperMap surface: status and body."""

    status: int
    body: Any


def request_record(service: str, resource: str, query: dict[str, str], body: Any) -> dict[str, Any]:
    """The ``supermap_request`` of a task (the token, a credential, is never stored)."""
    return {"service": service, "resource": resource,
            "query": {k: v for k, v in query.items() if k.lower() not in ("token", "key")}, "body": body}


def record_inline(session: Session, principal: Principal, outcome: Outcome, record: dict[str, Any]) -> AnalysisTask:
    """Store an analysis computed in the API as a successful task (flushes; the caller commits)."""
    principal.require_write("run analyses")
    task = AnalysisTask(
        name=f"SuperMap {record['resource']}"[:255],
        description="SuperMap iServer request computed in the API process",
        analysis_type=outcome.analysis_type,
        parameters=outcome.parameters,
        created_by=principal.user_id,
        status="successful",
        progress=100,
        phase="successful",
        started_at=func.now(),
        completed_at=func.now(),
        supermap_request=record,
        supermap_result=outcome.result,
    )
    session.add(task)
    session.flush()
    return task


def submit(session: Session, settings: Settings, principal: Principal, analysis_type: str, parameters: dict[str, Any],
           record: dict[str, Any]) -> AnalysisTask:
    """Submit a dataset analysis to the workers (enqueued once the caller's transaction commits)."""
    return task_service.submit(session, settings, principal, name=f"SuperMap {record['resource']}"[:255],
                               description="SuperMap iServer request", analysis_type=analysis_type,
                               parameters=parameters, supermap_request=record)


def resource_kind(resource: str) -> str:
    """``datasets/Landuse_R@Jingjin/buffer`` -> ``datasets/*/buffer`` (what a child URL must match)."""
    return re.sub(r"^datasets/[^/]+/", "datasets/*/", resource)


def find_task(session: Session, principal: Principal, resource_id: str, resource: str) -> AnalysisTask | None:
    """Return the caller's task behind a child resource id, if it belongs to ``resource``."""
    try:
        task_id = uuid.UUID(resource_id)
    except ValueError:
        return None
    task = session.get(AnalysisTask, task_id)
    if task is None or not can_change(task.created_by, principal) or not isinstance(task.supermap_request, dict):
        return None
    recorded = str(task.supermap_request.get("resource", ""))
    return task if resource_kind(recorded) == resource_kind(resource) else None


def view(session: Session, task: AnalysisTask) -> View:
    """The child resource's answer: the result when finished, the error when failed, else the state."""
    if task.status == "successful":
        return View(200, finalise(session, task))
    if task.status == "failed":
        code = 500 if task.error_code in SERVER_FAULTS else 400
        body = error_body(code, task.error_message or "the analysis failed")
        if task.supermap_result != body:  # what is served for it from now on
            task.supermap_result = body
            session.flush()
        return View(code, body)
    if task.status == "dismissed":
        return View(410, error_body(410, "the analysis was cancelled"))
    state = "RUNNING" if task.status == "running" else "ACCEPTED"
    progress = float(task.progress or 0)
    return View(202, {"succeed": False, "state": {"runState": state, "progress": progress, "phase": task.phase},
                      "message": f"the analysis is {task.status} ({progress:.0f}%); GET this resource again"})


def _runner_result(result: Any) -> bool:
    # The worker stores ``payloads.dataset_result`` (it carries ``newResourceID``); the iServer result of
    # a SuperMap request is built from it once, here.
    return isinstance(result, dict) and "newResourceID" in result


def finalise(session: Session, task: AnalysisTask) -> Any:
    """Return the iServer result of a successful task, building it (once, under the row lock) from the
    worker's output: the result dataset's name and/or a recordset, per ``dataReturnOption``."""
    if not _runner_result(task.supermap_result):
        return task.supermap_result
    locked = session.execute(select(AnalysisTask).where(AnalysisTask.id == task.id).with_for_update()
                             .execution_options(populate_existing=True)).scalar_one()
    if not _runner_result(locked.supermap_result):
        return locked.supermap_result
    record = locked.supermap_request or {}
    option = return_option((record.get("body") or {}).get("dataReturnOption"))
    dataset = session.get(Dataset, locked.result_dataset_id) if locked.result_dataset_id else None
    source = str(record.get("resource", "")).split("/")
    datasource = source[1].split("@", 1)[1] if len(source) > 2 and "@" in source[1] else payloads.DATASOURCE
    keep = option["dataReturnMode"] != "RECORDSET_ONLY"
    name = f"{dataset.name}@{datasource}" if dataset is not None and keep else None
    result: dict[str, Any] = {"succeed": True, "message": None, "dataset": name, "recordset": None}
    if option["dataReturnMode"] != "DATASET_ONLY" and dataset is not None:
        result["recordset"] = read_recordset(session, dataset, option["expectCount"], name)
    locked.supermap_result = result
    if not keep and dataset is not None:
        dataset_repo.delete(session, dataset)  # RECORDSET_ONLY keeps no dataset, as in iServer
    session.flush()
    return result


def read_recordset(session: Session, dataset: Dataset, limit: int, name: str | None) -> dict[str, Any]:
    """The first ``limit`` features of a dataset as an iServer recordset."""
    query = gis_io.select_features_sql(sql.SQL("dataset_id = %(d)s"), sql.SQL("ORDER BY fid LIMIT %(n)s"))
    with gis_io.raw_connection(session).cursor(binary=True) as cur:
        cur.execute(query, {"d": dataset.id, "n": limit})
        rows = cur.fetchall()
    geoms = shapely.from_wkb([r[1] for r in rows])
    features = [(int(r[0]), g, r[2] or {}) for r, g in zip(rows, geoms, strict=True)]
    return recordset(list(dataset.fields or []), features, payloads.epsg_of(dataset.crs), name)


def return_option(obj: Any) -> dict[str, Any]:
    """Check ``dataReturnOption`` and fill iServer's defaults (``DataReturnOption.js``)."""
    obj = obj or {}
    if not isinstance(obj, dict):
        raise BadRequest("dataReturnOption must be an object")
    mode = str(obj.get("dataReturnMode") or "RECORDSET_ONLY").upper()
    if mode not in RETURN_MODES:
        raise BadRequest(f"dataReturnOption.dataReturnMode must be one of {', '.join(RETURN_MODES)}, "
                         f"got {obj.get('dataReturnMode')!r}")
    count = obj.get("expectCount", DEFAULT_EXPECT_COUNT)
    count = DEFAULT_EXPECT_COUNT if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_EXPECT_COUNT:
        raise BadRequest(f"dataReturnOption.expectCount must be an integer from 1 to {MAX_EXPECT_COUNT}")
    dataset = obj.get("dataset")
    if dataset is not None and (not isinstance(dataset, str) or not dataset.split("@", 1)[0].strip()):
        raise BadRequest("dataReturnOption.dataset must be a dataset name")
    delete = obj.get("deleteExistResultDataset", True)
    return {"dataReturnMode": mode, "expectCount": count,
            "dataset": dataset.split("@", 1)[0].strip() if dataset else None,
            "deleteExistResultDataset": delete is not False}
