"""Shape layers for a context window: the features when they are small, else a summary plus a handle.

A summary has the feature count, the lon/lat extent, geometry types, geodesic area/length totals (WGS 84),
and a preview: the first few features, simplified until the preview fits half the byte budget, with
coordinates rounded to about 10 cm. ``full_result`` tells the agent how to fetch everything.

Layers are brought to lon/lat with the engine reads and ``reproject`` tasks use (``geoservice.analysis.
reproject``), ballpark operations allowed (a preview must always answer); ``transformation`` says which
operation was applied and how accurate it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import shapely
from geopandas import GeoDataFrame

from geoservice.analysis.crs import CRS84
from geoservice.analysis.reproject import reproject_layer
from geoservice.analysis.summary import geodesic_summary

#: A GeoJSON coordinate pair costs about this many bytes; used to skip serialising hopeless layers.
BYTES_PER_COORDINATE = 36
PREVIEW_DECIMALS = 6
PREVIEW_PROPERTIES = 6


Handle = dict[str, Any] | Callable[[], dict[str, Any]]


def layer_payload(gdf: GeoDataFrame, *, max_bytes: int, preview_features: int,
                  handle: Handle | None = None) -> dict[str, Any]:
    """Return the layer as a GeoJSON FeatureCollection (lon/lat) if it fits ``max_bytes``, else a summary.

    Args:
        gdf: the layer, in any CRS (its CRS must be set).
        max_bytes: the largest GeoJSON answered in full.
        preview_features: the most features a summary's preview shows.
        handle: how to fetch the full result (links, a tool call), or a function making one (called only
            when the layer is summarised, e.g. to store it first); without one the layer is always complete.
    """
    lonlat, used = to_crs84(gdf)
    lonlat = lonlat.reset_index(drop=True)
    stats = {**summary_of(lonlat), **transformation_member(used)}
    coordinates = int(shapely.get_num_coordinates(np.asarray(lonlat.geometry.array)).sum()) if len(lonlat) else 0
    if handle is None or coordinates * BYTES_PER_COORDINATE <= 2 * max_bytes:
        features = feature_collection(lonlat)
        if handle is None or len(orjson.dumps(features)) <= max_bytes:
            out = {"crs": "OGC:CRS84", **stats, "complete": True, "features": features}
            return out | ({"full_result": handle} if isinstance(handle, dict) else {})
    return summarised(stats, lonlat, max_bytes=max_bytes, preview_features=preview_features,
                      handle=handle() if callable(handle) else handle)


def summarised(stats: dict[str, Any], head: GeoDataFrame, *, max_bytes: int, preview_features: int,
               handle: dict[str, Any]) -> dict[str, Any]:
    """A summary: ``stats`` (count, extent, totals), a simplified preview of ``head`` (any CRS), the handle."""
    head, used = to_crs84(head)
    stats = {**transformation_member(used), **stats}
    return {"crs": "OGC:CRS84", **stats, "complete": False,
            "preview": preview(head, max_bytes // 2, preview_features), "full_result": handle,
            "note": f"the result is larger than {max_bytes} bytes: this is a summary with a simplified preview; "
                    "fetch everything through full_result"}


def to_crs84(gdf: GeoDataFrame) -> tuple[GeoDataFrame, dict[str, Any] | None]:
    """The layer in OGC:CRS84 (lon/lat degrees) and the transformation applied (None: nothing transformed)."""
    if not len(gdf):
        return gdf, None
    return reproject_layer(gdf, CRS84, allow_ballpark=True)


def transformation_member(transformation: dict[str, Any] | None) -> dict[str, Any]:
    """``{"transformation": {"description", "accuracy_m" (metres, None if unknown)}}`` when one was applied.

    When the best operation needs a grid that is not installed, ``best_available`` is false and
    ``grids_missing`` names the grids.
    """
    if transformation is None:
        return {}
    out = {"description": transformation["description"], "accuracy_m": transformation["accuracy_m"]}
    if not transformation["best_available"]:
        out |= {"best_available": False, "grids_missing": transformation["grids_missing"]}
    return {"transformation": out}


def summary_of(gdf: GeoDataFrame) -> dict[str, Any]:
    """Feature count, extent, geometry types and geodesic totals of a lon/lat layer."""
    if not len(gdf):
        return {"feature_count": 0, "extent": None, "geometry_types": []}
    stats = geodesic_summary(gdf)
    return {key: stats[key] for key in ("feature_count", "extent", "geometry_types", "geodesic_area_m2",
                                        "geodesic_length_m") if key in stats}


def feature_collection(gdf: GeoDataFrame) -> dict[str, Any]:
    """The layer as a GeoJSON FeatureCollection dict (properties JSON-safe)."""
    if not len(gdf):
        return {"type": "FeatureCollection", "features": []}
    out = orjson.loads(gdf.to_json(na="null", drop_id=True, default=str))
    out.pop("crs", None)  # always lon/lat (RFC 7946)
    return out


def preview(gdf: GeoDataFrame, budget: int, limit: int) -> dict[str, Any]:
    """The first ``limit`` features simplified (tolerance in degrees, doubling) until they fit ``budget``."""
    head = gdf.iloc[:limit]
    extent = summary_of(head).get("extent") or [0.0, 0.0, 0.0, 0.0]
    tolerance = max(extent[2] - extent[0], extent[3] - extent[1], 1e-6) / 2000
    while True:
        simplified = _simplified(head, tolerance)
        body = feature_collection(simplified)
        if len(orjson.dumps(body)) <= budget or len(head) == 0:
            return {**body, "features_shown": len(head), "simplify_tolerance_deg": tolerance}
        if tolerance > 1.0:  # coarse enough: show fewer features instead
            head = head.iloc[: len(head) // 2]
            continue
        tolerance *= 2


def _simplified(gdf: GeoDataFrame, tolerance: float) -> GeoDataFrame:
    geoms = shapely.simplify(np.asarray(gdf.geometry.array), tolerance, preserve_topology=True)
    geoms = shapely.transform(geoms, lambda xy: np.round(xy, PREVIEW_DECIMALS))
    out = gdf[[c for c in gdf.columns if c != gdf.geometry.name][:PREVIEW_PROPERTIES]].copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: v[:80] if isinstance(v, str) else v)
    return GeoDataFrame(out, geometry=geoms, crs=gdf.crs)
