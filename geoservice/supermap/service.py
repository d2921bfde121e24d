"""Use-cases of the SuperMap iServer surface, as an adapter over ``services.analyses``.

Every request is an ``analysis_tasks`` row: geometry analyses run in the API process through
``analyses.run_inline`` (recorded ``successful``), dataset analyses are submitted to the workers with the
native params models (``analyses.submit``). ``supermap_request`` is ``{"service", "resource", "query",
"body"}`` with the body as received (normalised to strict JSON); ``supermap_result`` is the iServer result
served for it, recorded with the task's outcome (``geoservice.iserver.payloads``), so reading a result
child never writes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db.models import AnalysisTask
from geoservice.errors import BadRequest, NotFound
from geoservice.iserver import payloads
from geoservice.iserver.payloads import DEFAULT_EXPECT_COUNT, RETURN_MODES
from geoservice.services import analyses
from geoservice.services.access import Principal
from geoservice.supermap.inline import GeometryRun

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


def run_geometry(session: Session, settings: Settings, principal: Principal, run: GeometryRun,
                 record: dict[str, Any]) -> analyses.InlineRun:
    """Run a translated geometry request in this process; record it as a successful task (flushes)."""
    prepared = analyses.prepare(session, principal, run.analysis_type, run.request, plugins=settings.analysis_plugins,
                                layers=run.layers)
    done = analyses.run_inline(session, settings, principal, prepared, layers=run.layers, store=False,
                               name=f"SuperMap {record['resource']}",
                               description="SuperMap iServer request computed in the API process",
                               supermap_request=record, supermap_result=run.render)
    return done


def submit(session: Session, settings: Settings, principal: Principal, analysis_type: str, parameters: dict[str, Any],
           record: dict[str, Any]) -> AnalysisTask:
    """Submit a dataset analysis to the workers (enqueued once the caller's transaction commits)."""
    prepared = analyses.prepare(session, principal, analysis_type, parameters, plugins=settings.analysis_plugins)
    return analyses.submit(session, settings, principal, prepared, name=f"SuperMap {record['resource']}"[:255],
                           description="SuperMap iServer request", supermap_request=record)


def resource_kind(resource: str) -> str:
    """``datasets/Landuse_R@Jingjin/buffer`` -> ``datasets/*/buffer`` (what a child URL must match)."""
    return re.sub(r"^datasets/[^/]+/", "datasets/*/", resource)


def find_task(session: Session, principal: Principal, resource_id: str, resource: str) -> AnalysisTask | None:
    """Return the caller's task behind a child resource id, if it belongs to ``resource``."""
    try:
        task = analyses.get_task(session, uuid.UUID(resource_id), principal)
    except (ValueError, NotFound):
        return None
    if not isinstance(task.supermap_request, dict):
        return None
    recorded = str(task.supermap_request.get("resource", ""))
    return task if resource_kind(recorded) == resource_kind(resource) else None


def view(task: AnalysisTask) -> View:
    """The child resource's answer: the result when finished, the error when failed, else the state."""
    return View(*payloads.answer(task))


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
