"""The SuperMap analyses on geometries sent in the request: buffer, overlay, batch overlay, coordtransfer.

They are small, so they run in the API process (and are recorded as successful analysis tasks by the
caller); each returns the iServer result body and a summary of the effective parameters for the task row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geopandas import GeoDataFrame
from pyproj import CRS

from geoservice.analysis.crs import parse_crs
from geoservice.analysis.reproject import ReprojectParams, reproject
from geoservice.errors import BadRequest, GeoserviceError
from geoservice.supermap.analyst import (
    buffer_geometry,
    check_operation,
    check_overlay_types,
    overlay_geometries,
    parse_buffer_setting,
)
from geoservice.supermap.decode import Decoded, epsg_of, from_supermap
from geoservice.supermap.results import geometry_json, geometry_result

MAX_BATCH = 10_000
_EMPTY_INPUT = {"geojson": {"type": "FeatureCollection", "features": []}}


@dataclass
class Outcome:
    """What an inline analysis produced: the task's analysis type and parameters, and the iServer result."""

    analysis_type: str
    parameters: dict[str, Any]
    result: Any
    notes: list[str] = field(default_factory=list)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def crs_of(epsg: int | None, where: str) -> CRS | None:
    """Return the CRS of an EPSG code (None stays None); an unknown code is a 400."""
    if epsg is None:
        return None
    try:
        return parse_crs(epsg, field=where)
    except GeoserviceError as exc:  # UnknownCRS
        raise BadRequest(f"{where}: {exc.detail}") from None


def _srid(body: dict[str, Any]) -> int | None:
    value = body.get("sourceGeometrySRID")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"sourceGeometrySRID must be a positive EPSG code, got {value!r}")
    return value


def geometry_buffer(body: Any, *, honour_radius_unit: bool) -> Outcome:
    """``POST geometry/buffer``: buffer ``sourceGeometry`` by ``analystParameter``.

    The distance is in the units of the geometry's CRS (iServer), unless ``honour_radius_unit``: then it is
    ``value x radiusUnit`` on the ground (see ``analyst.buffer_geometry``).
    """
    body = _object(body)
    source = from_supermap(body.get("sourceGeometry"), "sourceGeometry", epsg=_srid(body))
    spec = parse_buffer_setting(body.get("analystParameter") or body.get("bufferAnalystParameter"),
                                "analystParameter")
    crs = crs_of(source.epsg, "sourceGeometry.prjCoordSys.epsgCode")
    notes = list(source.notes)
    honoured = honour_radius_unit and crs is not None
    if honour_radius_unit and crs is None:
        notes.append("radiusUnit was not applied: the geometry has no prjCoordSys.epsgCode, so the distance "
                     "is in coordinate units")
    geom = buffer_geometry(source.geom, spec, crs, honoured)
    params = {"via": "supermap", "end_type": spec.end_type, "left_distance": spec.left, "right_distance": spec.right,
              "distance_unit": spec.radius_unit if honoured else "crs units", "quad_segs": spec.quad_segs,
              "crs": f"EPSG:{source.epsg}" if source.epsg else None, "honour_radius_unit": honoured}
    return Outcome("buffer", params, geometry_result(geom, source.epsg, "; ".join(notes) or None), notes)


def _tolerance(body: dict[str, Any]) -> float | None:
    value = body.get("tolerance")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"tolerance must be a number >= 0, got {value!r}")
    return float(value)


def _same_crs(a: Decoded, b: Decoded, where: str) -> int | None:
    if a.epsg is not None and b.epsg is not None and a.epsg != b.epsg:
        raise BadRequest(f"{where}: the source (EPSG:{a.epsg}) and operate (EPSG:{b.epsg}) geometries must be in "
                         "the same coordinate system")
    return a.epsg if a.epsg is not None else b.epsg


def _overlay_one(src: Any, opr: Any, op: str, tolerance: float | None, where: tuple[str, str]) -> tuple[Any, int | None,
                                                                                                         list[str]]:
    a = from_supermap(src, where[0])
    b = from_supermap(opr, where[1])
    check_overlay_types(op, a.kind, b.kind, where[1])
    epsg = _same_crs(a, b, where[1])
    return overlay_geometries(a.geom, b.geom, op, a.kind, tolerance), epsg, [*a.notes, *b.notes]


def geometry_overlay(body: Any) -> Outcome:
    """``POST geometry/overlay``: ``sourceGeometry`` ``operation`` ``operateGeometry``."""
    body = _object(body)
    op = check_operation(body.get("operation"))
    tolerance = _tolerance(body)
    geom, epsg, notes = _overlay_one(body.get("sourceGeometry"), body.get("operateGeometry"), op, tolerance,
                                     ("sourceGeometry", "operateGeometry"))
    params = {"via": "supermap", "operation": op.lower(), "tolerance": tolerance, "pairs": 1,
              "crs": f"EPSG:{epsg}" if epsg else None}
    return Outcome("overlay", params, geometry_result(geom, epsg, "; ".join(notes) or None), notes)


def geometry_overlay_batch(body: Any, *, ignore_analyst_param: bool) -> Outcome:
    """``POST geometry/overlay/batch``: pairs ``sourceGeometries[i]`` with ``operateGeometries[i]`` (one operate
    geometry applies to every source). The result is an array, one geometry result per pair; unless
    ``ignoreAnalystParam``, each also repeats its ``sourceGeometry`` and ``operateGeometry``."""
    body = _object(body)
    op = check_operation(body.get("operation"))
    tolerance = _tolerance(body)
    sources = body.get("sourceGeometries")
    operates = body.get("operateGeometries")
    if not isinstance(sources, list) or not sources or not isinstance(operates, list) or not operates:
        raise BadRequest("sourceGeometries and operateGeometries must be non-empty arrays of geometries")
    if len(operates) not in (1, len(sources)):
        raise BadRequest(f"operateGeometries must have one geometry or as many as sourceGeometries ({len(sources)}), "
                         f"not {len(operates)}")
    if len(sources) > MAX_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_BATCH} geometries")
    results, epsgs = [], set()
    for i, src in enumerate(sources):
        j = 0 if len(operates) == 1 else i
        geom, epsg, notes = _overlay_one(src, operates[j], op, tolerance,
                                         (f"sourceGeometries[{i}]", f"operateGeometries[{j}]"))
        item = geometry_result(geom, epsg, "; ".join(notes) or None)
        if not ignore_analyst_param:
            item.update(sourceGeometry=src, operateGeometry=operates[j])
        results.append(item)
        epsgs.add(epsg)
    params = {"via": "supermap", "operation": op.lower(), "tolerance": tolerance, "pairs": len(sources),
              "crs": ", ".join(sorted(f"EPSG:{e}" for e in epsgs if e)) or None}
    return Outcome("overlay", params, results)


def _epsg_field(body: dict[str, Any], code_key: str, prj_key: str) -> int:
    code = body.get(code_key)
    if code is None and body.get(prj_key) is not None:
        code = epsg_of(body.get(prj_key), prj_key)
        if code is None:
            raise BadRequest(f"{prj_key}: only a PrjCoordSys with an epsgCode is supported")
    if code is None:
        raise BadRequest(f"{code_key} (or {prj_key}) is required")
    if isinstance(code, bool) or not isinstance(code, int) or code <= 0:
        raise BadRequest(f"{code_key} must be a positive EPSG code, got {code!r}")
    return code


def coordtransfer(body: Any) -> Outcome:
    """``POST coordtransfer`` (data and geometry services): ``sourcePoints`` or ``sourceGeometries`` from
    ``sourceEpsgCode`` to ``targetEpsgCode``; the result is the array of transformed geometries."""
    body = _object(body)
    points, geometries = body.get("sourcePoints"), body.get("sourceGeometries")
    if (points is None) == (geometries is None):
        raise BadRequest("give exactly one of sourcePoints or sourceGeometries")
    source = _epsg_field(body, "sourceEpsgCode", "sourcePrj")
    target = _epsg_field(body, "targetEpsgCode", "targetPrj")
    src_crs = crs_of(source, "sourceEpsgCode")
    crs_of(target, "targetEpsgCode")
    if points is not None:
        decoded = from_supermap({"type": "POINT", "points": points}, "sourcePoints")
        geoms = list(getattr(decoded.geom, "geoms", [decoded.geom]))
        ids = list(range(len(geoms)))
    else:
        if not isinstance(geometries, list) or not geometries:
            raise BadRequest("sourceGeometries must be a non-empty array of geometries")
        geoms = [from_supermap(g, f"sourceGeometries[{i}]").geom for i, g in enumerate(geometries)]
        ids = [g.get("id") if isinstance(g.get("id"), int) else i for i, g in enumerate(geometries)]
    frame = GeoDataFrame(geometry=geoms, crs=src_crs)
    params = ReprojectParams.model_validate({"input": _EMPTY_INPUT, "target_crs": target})
    out = reproject(frame, params).gdf.geometry
    result = [geometry_json(g, target, gid=gid) for g, gid in zip(out, ids, strict=True)]
    summary = {"via": "supermap", "source_crs": f"EPSG:{source}", "target_crs": f"EPSG:{target}",
               "feature_count": len(geoms)}
    return Outcome("reproject", summary, result)
