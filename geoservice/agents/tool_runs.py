"""What each agent tool does: the read tools, and analyses run in-process or submitted as tasks.

Analyses go through ``services.analyses`` like every other front door (prepared, run in-process or
submitted, read back); this module only decides which and shapes the answer for a context window. Access is
checked the way the REST API does it, so an agent never sees another user's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from psycopg import sql
from sqlalchemy import and_
from sqlalchemy.orm import Session, sessionmaker

from geoservice.agents import shaping
from geoservice.agents.tools import ListDatasetsArgs, QueryFeaturesArgs, TaskArgs
from geoservice.config import Settings
from geoservice.db import gis_io
from geoservice.db.models import AnalysisTask, Dataset
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.errors import GeoserviceError, InvalidInput
from geoservice.queue import TaskQueue
from geoservice.services import analyses
from geoservice.services import datasets as dataset_service
from geoservice.services import features as fq
from geoservice.services.access import Principal, dataset_visible

#: Result datasets up to this many features are read whole to shape them; larger ones only their head.
READ_WHOLE_MAX = 10_000


@dataclass(frozen=True)
class AgentRuntime:
    """What agent calls need, whichever transport carries them (REST, MCP over HTTP or stdio)."""

    settings: Settings
    factory: sessionmaker[Session]
    redis: redis.Redis
    queue: TaskQueue


# --- read tools -----------------------------------------------------------------------------------

def run_read(rt: AgentRuntime, session: Session, principal: Principal, name: str, params: Any) -> dict[str, Any]:
    """Run read tool ``name`` with validated ``params``."""
    return _READERS[name](rt, session, principal, params)


def _list_datasets(_rt: AgentRuntime, session: Session, principal: Principal, p: ListDatasetsArgs) -> dict[str, Any]:
    visible = dataset_visible(principal)
    if p.name_contains:
        pattern = "%" + p.name_contains.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        visible = and_(visible, Dataset.name.ilike(pattern, escape="\\"))
    rows, total = dataset_repo.list_page(session, visible, limit=p.limit, offset=p.offset)
    return {"count": total, "limit": p.limit, "offset": p.offset,
            "datasets": [dataset_brief(d, principal) for d in rows]}


def dataset_brief(d: Dataset, principal: Principal) -> dict[str, Any]:
    return {"id": str(d.id), "name": d.name, "description": d.description, "feature_count": d.feature_count,
            "geometry_type": d.geometry_type, "crs": d.crs if len(d.crs) < 100 else "custom (WKT)",
            "extent_crs84": d.extent_crs84, "fields": {f["name"]: f["type"] for f in d.fields},
            "yours": d.owner_id == principal.user_id, "is_public": d.is_public}


def _describe_dataset(_rt: AgentRuntime, session: Session, principal: Principal, p: Any) -> dict[str, Any]:
    d = dataset_service.get_dataset(session, p.dataset_id, principal)
    return {**dataset_brief(d, principal), "crs": d.crs, "srid": d.srid, "extent": d.extent,
            "created_at": d.created_at.isoformat(), "source": d.source, "links": dataset_links(d.id)}


def dataset_links(dataset_id: uuid.UUID) -> dict[str, str]:
    base = f"/api/v1/datasets/{dataset_id}"
    return {"dataset_id": str(dataset_id), "dataset": base, "features": f"{base}/features",
            "export": f"{base}/export?format=geojson"}


def _query_features(rt: AgentRuntime, session: Session, principal: Principal, p: QueryFeaturesArgs
                    ) -> dict[str, Any]:
    dataset = dataset_service.get_dataset(session, p.dataset_id, principal)
    native = dataset_service.dataset_crs(dataset)
    query = fq.FeatureQuery()
    if p.bbox is not None:
        box = fq.parse_bbox(",".join(repr(v) for v in p.bbox))
        with _as_field("bbox_crs"):
            box_crs = dataset_service.output_crs(dataset, p.bbox_crs)
        fq.add_bbox(query, dataset, fq.bbox_to_native(
            box, box_crs, native, allow_ballpark=True,
            area_of_interest=dataset_service.extent_area_of_interest(dataset)))
    with _as_field("filters"):
        fq.add_filters(query, dataset, [_filter_expression(f) for f in p.filters])
    names = [f["name"] for f in dataset.fields]
    selected = names if p.properties is None else p.properties
    unknown = sorted(set(selected) - set(names))
    if unknown:
        raise InvalidInput(f"properties: unknown field(s) {unknown}; fields are {names}", field="properties")
    order = sql.SQL("ORDER BY fid LIMIT %(limit)s")
    gdf, fids = gis_io.read_features(session, dataset.id, native, dataset.fields, where=query.clause(),
                                     params={**query.params, "limit": p.limit + 1}, order_limit=order)
    more = len(fids) > p.limit
    gdf = gdf.iloc[: p.limit][[*selected, gdf.geometry.name]]
    handle = {**dataset_links(dataset.id), "note": "the features link takes bbox, filter and properties too"}
    payload = shaping.layer_payload(gdf, max_bytes=rt.settings.agent_max_result_bytes,
                                    preview_features=rt.settings.agent_preview_features, handle=handle)
    return {**payload, "more": more, "dataset_id": str(dataset.id)}


@contextmanager
def _as_field(name: str) -> Iterator[None]:
    """Report errors of the REST helpers under the tool's argument name."""
    try:
        yield
    except GeoserviceError as exc:
        exc.field = name
        exc.detail = f"{name}: {exc.detail.split(': ', 1)[-1]}"
        raise


def _filter_expression(f: Any) -> str:
    value = str(f.value) if f.op == "~" else orjson.dumps(f.value).decode()
    return f"{f.field}{f.op}{value}"


def task_summary(task: AnalysisTask) -> dict[str, Any]:
    base = f"/api/v1/tasks/{task.id}"
    return {"id": str(task.id), "analysis_type": task.analysis_type, "status": task.status or "accepted",
            "progress": float(task.progress or 0), "phase": task.phase, "error_code": task.error_code,
            "error_message": task.error_message,
            "result_dataset_id": str(task.result_dataset_id) if task.result_dataset_id else None,
            "links": {"task": base, "events": f"{base}/events", "results": f"{base}/results"},
            "follow_up": {"task_status": {"task_id": str(task.id)}, "task_result": {"task_id": str(task.id)}}}


def _task_status(_rt: AgentRuntime, session: Session, principal: Principal, p: TaskArgs) -> dict[str, Any]:
    return task_summary(analyses.get_task(session, p.task_id, principal))


def _task_result(rt: AgentRuntime, session: Session, principal: Principal, p: TaskArgs) -> dict[str, Any]:
    return task_result(rt, session, principal, p.task_id)


def task_result(rt: AgentRuntime, session: Session, principal: Principal, task_id: uuid.UUID) -> dict[str, Any]:
    """The task and, once it is successful, its output shaped for a context window."""
    found = analyses.result(session, principal, task_id)
    task = found.task
    out: dict[str, Any] = {"status": task.status, "task": task_summary(task), "result": None}
    rows = found.rows if task.status == "successful" else []
    if not rows:
        out["note"] = "no result yet: the task is not successful" if task.status != "successful" else "no result"
        return out
    row, dataset = rows[0], found.dataset
    if dataset is None:
        out["result"] = {"data": row.data, "note": "the result dataset was deleted"}
        return out
    out["result"] = {**_dataset_payload(rt, session, dataset, row.data), "dataset_id": str(dataset.id),
                     "metadata": row.result_metadata}
    return out


def _dataset_payload(rt: AgentRuntime, session: Session, dataset: Dataset, data: Mapping[str, Any]
                     ) -> dict[str, Any]:
    limits = {"max_bytes": rt.settings.agent_max_result_bytes, "preview_features": rt.settings.agent_preview_features}
    native = dataset_service.dataset_crs(dataset)
    handle = {**dataset_links(dataset.id), "tool": {"name": "query_features", "arguments": {
        "dataset_id": str(dataset.id)}}}
    if dataset.feature_count <= READ_WHOLE_MAX:
        gdf, _ = gis_io.read_features(session, dataset.id, native, dataset.fields)
        return shaping.layer_payload(gdf, handle=handle, **limits)
    head, _ = gis_io.read_features(session, dataset.id, native, dataset.fields, params={
        "limit": limits["preview_features"]}, order_limit=sql.SQL("ORDER BY fid LIMIT %(limit)s"))
    stats = {"feature_count": dataset.feature_count, "extent": dataset.extent_crs84,
             **{k: data[k] for k in ("geodesic_area_m2", "geodesic_length_m") if k in data}}
    return shaping.summarised(stats, head, handle=handle, **limits)  # it brings the preview to lon/lat


_READERS = {"list_datasets": _list_datasets, "describe_dataset": _describe_dataset,
            "query_features": _query_features, "task_status": _task_status, "task_result": _task_result}


# --- analysis tools ---------------------------------------------------------------------------------

def is_small(rt: AgentRuntime, prepared: analyses.Prepared) -> bool:
    """True when the inputs are small enough to run in this process."""
    inline_bytes = sum(len(orjson.dumps(ref.geojson)) for ref in prepared.request.inputs.values()
                       if ref.geojson is not None)
    s = rt.settings
    return prepared.input_features() <= s.agent_sync_max_features and inline_bytes <= s.agent_sync_max_inline_bytes


def run_inline(rt: AgentRuntime, session: Session, principal: Principal, prepared: analyses.Prepared,
               invocation_id: uuid.UUID) -> dict[str, Any]:
    """Run the analysis in this process (recorded as a successful task) and shape its output; the output is
    kept as a dataset only when it is too large to answer, or when ``output_name`` asks for it."""
    limits = {"max_bytes": rt.settings.agent_max_result_bytes, "preview_features": rt.settings.agent_preview_features}
    named = prepared.request.output_name is not None
    shaped: dict[str, Any] = {}

    def keep(output: Any) -> bool:  # shape first: a summary needs the stored dataset behind its handle
        shaped.update(shaping.layer_payload(output.gdf, handle=_pending, **limits))
        return named or shaped.get("complete") is False

    run = analyses.run_inline(session, rt.settings, principal, prepared, store=keep,
                              name=f"agent {prepared.analysis_type} {str(invocation_id)[:8]}",
                              description=f"in-process run of agent tool call {invocation_id}")
    if run.dataset is not None:
        handle = {**dataset_links(run.dataset.id), "name": run.dataset.name,
                  "tool": {"name": "query_features", "arguments": {"dataset_id": str(run.dataset.id)}}}
        shaped["full_result"] = handle
    return {**shaped, "metadata": orjson.loads(orjson.dumps(run.output.metadata, default=str))}


def _pending() -> dict[str, Any]:
    return {}  # replaced by the stored dataset's handle once it is stored


def submit(rt: AgentRuntime, session: Session, principal: Principal, prepared: analyses.Prepared,
           invocation_id: uuid.UUID) -> AnalysisTask:
    """Submit the analysis as a task (enqueued once ``session`` commits)."""
    return analyses.submit(session, rt.settings, principal, prepared,
                           name=f"agent {prepared.analysis_type} {str(invocation_id)[:8]}",
                           description=f"agent tool call {invocation_id}")
