"""The SuperMap iServer equivalents of our tasks, stored in ``supermap_request`` / ``supermap_result``.

Reprojection has no spatialanalyst counterpart: it is modelled on the ``coordtransfer`` resource.
Buffer and overlay use the dataset analysis shapes (``datasets/{name}/buffer``, ``.../overlay``) or the
geometry shapes for inline input.
"""

from __future__ import annotations

from typing import Any

import shapely
from pyproj import CRS

from geoservice.supermap.geometry import to_supermap

DATASOURCE = "geoservice"
INLINE_GEOMETRY_LIMIT = 100  # larger inline inputs are summarised, not copied into the payload

UNIT_NAMES = {"m": "METER", "km": "KILOMETER", "mi": "MILE", "ft": "FOOT"}


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


def _coordtransfer(params: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """``POST .../coordtransfer`` (data or geometry service): the closest iServer counterpart."""
    ref = params.input
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


def _return_option(params: Any) -> dict[str, Any]:
    return {"expectCount": 1000, "dataset": getattr(params, "output_name", None), "dataReturnMode": "DATASET_ONLY",
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


def _buffer(params: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Dataset buffer (``datasets/{name}/buffer``) or geometry buffer for inline input."""
    setting = _buffer_setting(params)
    ref = params.input
    if ref.dataset_id is not None:
        body = {"bufferAnalystParameter": setting, "filterQueryParameter": _empty_filter(),
                "dataReturnOption": _return_option(params), "isAttributeRetained": not params.dissolve,
                "isUnion": params.dissolve}
        return {"resource": f"datasets/{_dataset_name(sources['input'])}/buffer", "body": body}
    geoms = _inline_geometries(ref.geojson, epsg_of(ref.crs or "OGC:CRS84")) or []
    bodies = [{"sourceGeometry": g, "analystParameter": setting} for g in geoms]
    return {"resource": "geometry/buffer", "body": bodies[0] if len(bodies) == 1 else bodies}


def _overlay(params: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Dataset overlay (``datasets/{name}/overlay``) or geometry (batch) overlay for inline input."""
    op = params.operation.upper()
    tolerance = params.grid_size or 0
    if params.input.dataset_id is not None:
        body: dict[str, Any] = {"operation": op, "tolerance": tolerance,
                                "sourceDatasetFields": params.input_fields or [],
                                "operateDatasetFields": params.overlay_fields or [],
                                "sourceDatasetFilter": _empty_filter(), "operateDatasetFilter": _empty_filter(),
                                "dataReturnOption": _return_option(params)}
        if params.overlay.dataset_id is not None:
            body["operateDataset"] = _dataset_name(sources["overlay"])
        else:
            body["operateRegions"] = _inline_geometries(params.overlay.geojson,
                                                        epsg_of(params.overlay.crs or "OGC:CRS84")) or []
        return {"resource": f"datasets/{_dataset_name(sources['input'])}/overlay", "body": body}
    source = _inline_geometries(params.input.geojson, epsg_of(params.input.crs or "OGC:CRS84")) or []
    operate = (_inline_geometries(params.overlay.geojson, epsg_of(params.overlay.crs or "OGC:CRS84")) or []
               if params.overlay.geojson is not None else [{"dataset": _dataset_name(sources["overlay"])}])
    return {"resource": "geometry/overlay/batch", "body": {"operation": op, "sourceGeometries": source,
                                                           "operateGeometries": operate, "tolerance": tolerance}}


_BUILDERS = {"reproject": _coordtransfer, "buffer": _buffer, "overlay": _overlay}


def supermap_request(analysis_type: str, params: Any, sources: dict[str, Any]) -> dict[str, Any] | None:
    """Return the SuperMap request equivalent to a task (None when there is no equivalent)."""
    builder = _BUILDERS.get(analysis_type)
    return None if builder is None else builder(params, sources)


def dataset_result(dataset_name: str, task_id: str) -> dict[str, Any]:
    """A dataset analysis result in iServer's shape (``DATASET_ONLY`` return mode)."""
    return {"succeed": True, "message": None, "dataset": f"{dataset_name}@{DATASOURCE}", "recordset": None,
            "newResourceID": task_id}
