"""The SuperMap iServer equivalents of our tasks, stored in ``supermap_request`` / ``supermap_result``.

The one place these records are built, as pure functions of a task and its result: ``task_request`` where a
task is accepted (unless the SuperMap surface received it, then the request as received is kept),
``task_result``/``failure_result``/``dismissed_result`` where its outcome is recorded, and ``answer``, the
iServer answer for a task row (what a result child resource serves; it never writes).

Reprojection has no spatialanalyst counterpart: it is modelled on the ``coordtransfer`` resource.
Buffer and overlay use the dataset analysis shapes (``datasets/{name}/buffer``, ``.../overlay``) or the
geometry shapes for inline input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import shapely
from pyproj import CRS

from geoservice.analysis.request import AnalysisRequest
from geoservice.iserver.geometry import to_supermap
from geoservice.iserver.results import error_body
from geoservice.iserver.results import recordset as recordset_body

DATASOURCE = "geoservice"
INLINE_GEOMETRY_LIMIT = 100  # larger inline inputs are summarised, not copied into the payload

UNIT_NAMES = {"m": "METER", "km": "KILOMETER", "mi": "MILE", "ft": "FOOT"}
RETURN_MODES = ("DATASET_ONLY", "RECORDSET_ONLY", "DATASET_AND_RECORDSET")
DEFAULT_EXPECT_COUNT = 1000
#: Task error codes that are the service's fault (500); any other failure is the request's (400).
SERVER_FAULTS = frozenset({"InternalError", "MaxAttemptsExceeded", "TimeLimitExceeded", None})


def epsg_of(crs_value: Any) -> int | None:
    """Return the EPSG code of a CRS value when it has one."""
    if crs_value is None:
        return None
    try:
        crs = CRS.from_user_input(crs_value)
    except Exception:
        return None
    if crs.to_authority() == ("OGC", "CRS84"):
        return 4326
    return crs.to_epsg()


def _inline_geometries(geojson: dict[str, Any], epsg: int | None) -> list[dict[str, Any]] | None:
    features = geojson.get("features") if geojson.get("type") == "FeatureCollection" else [geojson]
    if not isinstance(features, list) or len(features) > INLINE_GEOMETRY_LIMIT:
        return None
    out = []
    for i, feature in enumerate(features):
        geometry = feature.get("geometry") if feature.get("type") == "Feature" else feature
        try:
            out.append(to_supermap(shapely.geometry.shape(geometry), gid=i + 1, epsg=epsg))
        except Exception:
            return None
    return out


def _dataset_name(source: Any) -> str:
    return f"{source.name}@{DATASOURCE}"


def _coordtransfer(request: AnalysisRequest, sources: Mapping[str, Any]) -> dict[str, Any]:
    """``POST .../coordtransfer`` (data or geometry service): the closest iServer counterpart."""
    params, ref = request.settings, request.inputs["input"]
    body: dict[str, Any] = {"targetEpsgCode": epsg_of(params.target_crs)}
    if ref.dataset_id is not None:
        dataset = sources["input"]
        body.update(sourceDataset=_dataset_name(dataset), sourceEpsgCode=epsg_of(dataset.crs))
    else:
        epsg = epsg_of(ref.crs or params.source_crs or "OGC:CRS84")
        body["sourceEpsgCode"] = epsg
        geometries = _inline_geometries(ref.geojson, epsg)
        if geometries is not None:
            body["sourceGeometries"] = geometries
    if body["targetEpsgCode"] is None:
        body["targetPrj"] = {"wkt": CRS.from_user_input(params.target_crs).to_wkt()}
    resource = "data/coordtransfer" if ref.dataset_id is not None else "geometry/coordtransfer"
    return {"resource": resource, "body": body}


def _return_option(request: AnalysisRequest) -> dict[str, Any]:
    return {"expectCount": DEFAULT_EXPECT_COUNT, "dataset": request.output_name, "dataReturnMode": "DATASET_ONLY",
            "deleteExistResultDataset": True}


def _buffer_setting(params: Any) -> dict[str, Any]:
    dist = params.distance
    unit = dist.unit.value
    value = float(dist.value)
    if unit == "nmi":  # iServer has no nautical mile unit
        value, unit = value * 1852.0, "m"
    # Signed as given (iServer itself refuses distances <= 0, so an erosion has no exact counterpart).
    left = right = value
    if params.single_sided:
        left, right = (value, 0.0) if value > 0 else (0.0, -value)
    setting: dict[str, Any] = {
        "endType": "FLAT" if params.cap_style == "flat" or params.single_sided else "ROUND",
        "leftDistance": {"exp": None, "value": left},
        "rightDistance": {"exp": None, "value": right},
        "semicircleLineSegment": params.quad_segs * 2,
    }
    if unit != "degrees":  # geometry buffers on degrees use the CRS unit: no radiusUnit
        setting["radiusUnit"] = UNIT_NAMES[unit]
    return setting


def _empty_filter() -> dict[str, Any]:
    return {"attributeFilter": None, "name": None, "joinItems": None, "linkItems": None, "ids": None,
            "orderBy": None, "groupBy": None, "fields": None}


def _buffer(request: AnalysisRequest, sources: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset buffer (``datasets/{name}/buffer``) or geometry buffer for inline input."""
    params, ref = request.settings, request.inputs["input"]
    setting = _buffer_setting(params)
    if ref.dataset_id is not None:
        body = {"bufferAnalystParameter": setting, "filterQueryParameter": _empty_filter(),
                "dataReturnOption": _return_option(request), "isAttributeRetained": not params.dissolve,
                "isUnion": params.dissolve}
        return {"resource": f"datasets/{_dataset_name(sources['input'])}/buffer", "body": body}
    geoms = _inline_geometries(ref.geojson, epsg_of(ref.crs or "OGC:CRS84")) or []
    bodies = [{"sourceGeometry": g, "analystParameter": setting} for g in geoms]
    return {"resource": "geometry/buffer", "body": bodies[0] if len(bodies) == 1 else bodies}


def _overlay(request: AnalysisRequest, sources: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset overlay (``datasets/{name}/overlay``) or geometry (batch) overlay for inline input."""
    params, source_ref, overlay_ref = request.settings, request.inputs["input"], request.inputs["overlay"]
    op = params.operation.upper()
    tolerance = params.grid_size or 0
    if source_ref.dataset_id is not None:
        body: dict[str, Any] = {"operation": op, "tolerance": tolerance,
                                "sourceDatasetFields": params.input_fields or [],
                                "operateDatasetFields": params.overlay_fields or [],
                                "sourceDatasetFilter": _empty_filter(), "operateDatasetFilter": _empty_filter(),
                                "dataReturnOption": _return_option(request)}
        if overlay_ref.dataset_id is not None:
            body["operateDataset"] = _dataset_name(sources["overlay"])
        else:
            body["operateRegions"] = _inline_geometries(overlay_ref.geojson,
                                                        epsg_of(overlay_ref.crs or "OGC:CRS84")) or []
        return {"resource": f"datasets/{_dataset_name(sources['input'])}/overlay", "body": body}
    source = _inline_geometries(source_ref.geojson, epsg_of(source_ref.crs or "OGC:CRS84")) or []
    operate = (_inline_geometries(overlay_ref.geojson, epsg_of(overlay_ref.crs or "OGC:CRS84")) or []
               if overlay_ref.geojson is not None else [{"dataset": _dataset_name(sources["overlay"])}])
    return {"resource": "geometry/overlay/batch", "body": {"operation": op, "sourceGeometries": source,
                                                           "operateGeometries": operate, "tolerance": tolerance}}


_BUILDERS = {"reproject": _coordtransfer, "buffer": _buffer, "overlay": _overlay}


def task_request(request: AnalysisRequest, sources: Mapping[str, Any]) -> dict[str, Any] | None:
    """The SuperMap request equivalent to a task (None when there is none, e.g. a plugin's operation).

    Args:
        request: the task's request (inputs, settings, output name).
        sources: the stored datasets of its dataset inputs, by input name (``name`` and ``crs`` are used).
    """
    builder = _BUILDERS.get(request.analysis_type)
    return None if builder is None else builder(request, sources)


# --- results ------------------------------------------------------------------------------------------

class ReturnOption(NamedTuple):
    """What a request asks to get back (``dataReturnOption``, with iServer's defaults)."""

    mode: str
    expect_count: int
    dataset: str | None


def received_on_surface(record: Any) -> bool:
    """Whether ``supermap_request`` is a request the SuperMap surface received (``{"service", ...}``), not an
    equivalent built for a native task."""
    return isinstance(record, dict) and "service" in record


def return_option(record: Any) -> ReturnOption:
    """The return option of a recorded request (already checked when the request was accepted)."""
    body = record.get("body") if isinstance(record, dict) else None
    option = (body or {}).get("dataReturnOption") if isinstance(body, dict) else None
    option = option if isinstance(option, dict) else {}
    mode = str(option.get("dataReturnMode") or "RECORDSET_ONLY").upper()
    count = option.get("expectCount")
    count = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else DEFAULT_EXPECT_COUNT
    dataset = option.get("dataset")
    return ReturnOption(mode if mode in RETURN_MODES else "RECORDSET_ONLY", count,
                        dataset.split("@", 1)[0].strip() if isinstance(dataset, str) and dataset else None)


def output_policy(record: Any) -> tuple[bool, int | None]:
    """``(keep the result dataset, features in the recordset or None)`` for a task with this request.

    A request received on the SuperMap surface gets what its ``dataReturnOption`` asks (``RECORDSET_ONLY``
    keeps no dataset, as in iServer); a native task keeps its dataset and has no recordset.
    """
    if not received_on_surface(record):
        return True, None
    option = return_option(record)
    return option.mode != "RECORDSET_ONLY", None if option.mode == "DATASET_ONLY" else option.expect_count


def _datasource(record: Any) -> str:
    resource = str(record.get("resource", "")) if isinstance(record, dict) else ""
    parts = resource.split("/")
    return parts[1].split("@", 1)[1] if len(parts) > 2 and parts[0] == "datasets" and "@" in parts[1] else DATASOURCE


Rows = tuple[list[dict[str, Any]], list[tuple[int, Any, dict[str, Any]]], int | None]


def task_result(record: Any, *, dataset_name: str | None, recordset: Rows | None = None) -> dict[str, Any]:
    """The iServer result of a successful dataset task.

    Args:
        record: the task's ``supermap_request``.
        dataset_name: the kept result dataset's name (None: not kept).
        recordset: ``(fields, rows, epsg)`` of the features to return as a recordset (None: no recordset);
            rows are ``(feature id, geometry, attributes)``.
    """
    name = f"{dataset_name}@{_datasource(record)}" if dataset_name else None
    body = recordset_body(*recordset, name) if recordset is not None else None
    return {"succeed": True, "message": None, "dataset": name, "recordset": body}


def failure_result(error_code: str | None, message: str | None) -> dict[str, Any]:
    """The iServer error of a failed task: 500 for the service's faults, 400 for the request's."""
    code = 500 if error_code in SERVER_FAULTS else 400
    return error_body(code, message or "the analysis failed")


def dismissed_result() -> dict[str, Any]:
    return error_body(410, "the analysis was cancelled")


def answer(task: Any) -> tuple[int, Any]:
    """The iServer answer for a task row (status, body): the recorded result or error once final, else its
    state. Pure: reading a result never writes."""
    if task.status == "successful":
        return 200, task.supermap_result
    if task.status == "failed":
        body = task.supermap_result if isinstance(task.supermap_result, dict) and "error" in task.supermap_result \
            else failure_result(task.error_code, task.error_message)
        return int(body["error"]["code"]), body
    if task.status == "dismissed":
        return 410, dismissed_result()
    state = "RUNNING" if task.status == "running" else "ACCEPTED"
    progress = float(task.progress or 0)
    return 202, {"succeed": False, "state": {"runState": state, "progress": progress, "phase": task.phase},
                 "message": f"the analysis is {task.status} ({progress:.0f}%); GET this resource again"}
