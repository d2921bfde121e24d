"""The SuperMap analyses on geometries sent in the request: buffer, overlay, batch overlay, coordtransfer.

Each is translated into a request of the native operation (``buffer``, ``overlay``, ``reproject``) with
the decoded geometries as its input layers, run through ``services.analyses.run_inline`` like any other
in-process analysis, and rendered back as iServer's result. iServer's own rules stay here: a geometry
buffer's distance in the units of the geometry's CRS (``unit="crs"``) unless ``radiusUnit`` is honoured,
FLAT ends on lines only, the overlay type rules, and one result geometry per source geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pydantic import ValidationError
from pyproj import CRS
from shapely.geometry import GeometryCollection, mapping
from shapely.geometry.base import BaseGeometry

from geoservice.analysis.base import AnalysisOutput, layer
from geoservice.analysis.crs import parse_crs
from geoservice.analysis.overlay import keep_dimension
from geoservice.analysis.request import AnalysisRequest, InputRef, request_of
from geoservice.analysis.validation import check_coordinates
from geoservice.errors import BadRequest, GeoserviceError
from geoservice.iserver.decode import Decoded, epsg_of, from_supermap
from geoservice.iserver.results import geometry_json, geometry_result
from geoservice.services import analyses
from geoservice.supermap.analyst import check_operation, check_overlay_types, parse_buffer_setting

MAX_BATCH = 10_000
_DIMENSION = {"POINT": 0, "LINE": 1, "REGION": 2}


@dataclass
class GeometryRun:
    """An iServer geometry request translated: the native request, its decoded layers, how to render the output."""

    request: AnalysisRequest
    layers: dict[str, GeoDataFrame]
    render: Callable[[AnalysisOutput], Any]
    notes: list[str] = field(default_factory=list)

    @property
    def analysis_type(self) -> str:
        return self.request.analysis_type


def answer(run: GeometryRun) -> Any:
    """Compute and render a translated request without recording it (pure; tests and benchmarks)."""
    return run.render(analyses.compute(run.request, run.layers))


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


def _ref(geoms: list[BaseGeometry], epsg: int | None) -> InputRef:
    """An inline input holding the decoded geometries, so the recorded task is a native request."""
    features = [{"type": "Feature", "properties": {}, "geometry": mapping(g)} for g in geoms]
    return InputRef(geojson={"type": "FeatureCollection", "features": features},
                    crs=f"EPSG:{epsg}" if epsg else None)


def _settings(analysis_type: str, values: dict[str, Any], what: str) -> Any:
    model = analyses.registry("")[analysis_type].params_model
    try:
        return model.model_validate(values)
    except ValidationError as exc:  # e.g. a distance beyond the core's 1,000 km limit
        message = str(exc.errors()[0].get("msg", exc)).removeprefix("Value error, ")
        raise BadRequest(f"{what}: {message}") from None


def _checked(gdf: GeoDataFrame, where: str) -> GeoDataFrame:
    """The decoded geometries, refused (400) when a coordinate is not finite or, in a geographic CRS, beyond
    the Earth (a latitude of 95 degrees)."""
    try:
        check_coordinates(gdf)
    except GeoserviceError as exc:
        raise BadRequest(f"{where}: {exc.detail}") from None
    return gdf


def _op(name: str) -> Any:
    return analyses.registry("")[name]


# --- buffer -------------------------------------------------------------------------------------------

def geometry_buffer(body: Any, *, honour_radius_unit: bool) -> GeometryRun:
    """``POST geometry/buffer``: buffer ``sourceGeometry`` by ``analystParameter``.

    The distance is in the units of the geometry's CRS (iServer), unless ``honour_radius_unit``: then it is
    ``value x radiusUnit`` on the ground (metres in a local projection for geographic data).
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
    unit, scale = ("m", spec.metres(1.0)) if honoured else ("crs", 1.0)
    settings: dict[str, Any] = {"distance": {"value": spec.left * scale, "unit": unit}, "quad_segs": spec.quad_segs}
    if spec.end_type == "FLAT" and source.kind == "LINE":  # iServer: FLAT applies to lines only
        if spec.left == spec.right:
            settings["cap_style"] = "flat"
        else:
            settings["right_distance"] = {"value": spec.right * scale, "unit": unit}
    request = request_of(_op("buffer"), _settings("buffer", settings, "buffer distance"),
                         {"input": _ref([source.geom], source.epsg)})
    layers = {"input": _checked(layer([source.geom], crs), "sourceGeometry")}
    message = "; ".join(notes) or None

    def render(output: AnalysisOutput) -> Any:
        geom = output.gdf.geometry.iloc[0] if len(output.gdf) else None
        return geometry_result(geom, source.epsg, message)

    return GeometryRun(request, layers, render, notes)


# --- overlay ------------------------------------------------------------------------------------------

def _tolerance(body: dict[str, Any]) -> float | None:
    value = body.get("tolerance")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"tolerance must be a number >= 0, got {value!r}")
    return float(value) or None


def _same_crs(a: Decoded, b: Decoded, where: str) -> int | None:
    if a.epsg is not None and b.epsg is not None and a.epsg != b.epsg:
        raise BadRequest(f"{where}: the source (EPSG:{a.epsg}) and operate (EPSG:{b.epsg}) geometries must be in "
                         "the same coordinate system")
    return a.epsg if a.epsg is not None else b.epsg


@dataclass
class _Pair:
    source: Decoded
    operate: Decoded
    epsg: int | None

    def line_crossings(self, op: str) -> bool:
        """iServer keeps points and lines of a line x line intersection."""
        return op == "INTERSECT" and self.source.kind == "LINE" and self.operate.kind == "LINE"


def _pair(src: Any, opr: Any, op: str, where: tuple[str, str]) -> _Pair:
    a, b = from_supermap(src, where[0]), from_supermap(opr, where[1])
    check_overlay_types(op, a.kind, b.kind, where[1])
    return _Pair(a, b, _same_crs(a, b, where[1]))


def _overlay_run(op: str, tolerance: float | None, pairs: list[_Pair], operates: list[Decoded],
                 render: Callable[[list[BaseGeometry | None]], Any]) -> GeometryRun:
    """One pairwise overlay of every source geometry with its operate geometry (planar, in coordinate units:
    the geometries of a pair share a CRS, which the overlay never changes)."""
    settings = _settings("overlay", {"operation": op.lower(), "grid_size": tolerance, "pairwise": True,
                                     "keep_geom_type": not any(p.line_crossings(op) for p in pairs)}, "overlay")
    epsg = pairs[0].epsg if len({p.epsg for p in pairs}) == 1 else None
    sources = [p.source.geom for p in pairs]
    request = request_of(_op("overlay"), settings, {"input": _ref(sources, epsg),
                                                    "overlay": _ref([d.geom for d in operates], epsg)})
    layers = {"input": layer(sources, None), "overlay": layer([d.geom for d in operates], None)}
    for pair in pairs:  # planar in coordinate units, but a geographic CRS still bounds the coordinates
        crs = crs_of(pair.epsg, "prjCoordSys.epsgCode")
        if crs is not None and crs.is_geographic:
            _checked(layer([pair.source.geom, pair.operate.geom], crs), "sourceGeometry")

    def per_pair(output: AnalysisOutput) -> Any:
        gdf = output.gdf
        found: list[list[BaseGeometry]] = [[] for _ in pairs]
        for i, geom in zip(gdf["pair"].to_numpy(), gdf.geometry, strict=True):
            found[int(i)].append(geom)
        return render([_merge(op, pair, pieces) for pair, pieces in zip(pairs, found, strict=True)])

    return GeometryRun(request, layers, per_pair)


def _merge(op: str, pair: _Pair, pieces: list[BaseGeometry]) -> BaseGeometry | None:
    """A pair's pieces as iServer's one result geometry: UNION and XOR dissolved (a ∪ b, a Δ b), IDENTITY
    and UPDATE kept as parts, of the source's dimension (UPDATE: regions)."""
    if not pieces:
        return None
    merged = shapely.union_all(pieces) if op in ("UNION", "XOR") else _parts(pieces)
    if pair.line_crossings(op):
        return merged
    dim = 2 if op == "UPDATE" else _DIMENSION[pair.source.kind]
    return keep_dimension(np.array([merged], dtype=object), np.array([dim]))[0] or GeometryCollection()


def _parts(pieces: list[BaseGeometry]) -> BaseGeometry:
    """Collect the pieces' parts into one multi-geometry without dissolving them."""
    flat = [p for g in pieces if not g.is_empty for p in getattr(g, "geoms", [g])]
    if len(flat) == 1:
        return flat[0]
    kinds = {p.geom_type for p in flat}
    make = {"Polygon": shapely.MultiPolygon, "LineString": shapely.MultiLineString, "Point": shapely.MultiPoint}
    return make[kinds.pop()](flat) if len(kinds) == 1 and next(iter(kinds), "") in make else GeometryCollection(flat)


def geometry_overlay(body: Any) -> GeometryRun:
    """``POST geometry/overlay``: ``sourceGeometry`` ``operation`` ``operateGeometry``."""
    body = _object(body)
    op = check_operation(body.get("operation"))
    tolerance = _tolerance(body)
    pair = _pair(body.get("sourceGeometry"), body.get("operateGeometry"), op, ("sourceGeometry", "operateGeometry"))
    message = "; ".join([*pair.source.notes, *pair.operate.notes]) or None
    return _overlay_run(op, tolerance, [pair], [pair.operate],
                        lambda geoms: geometry_result(geoms[0], pair.epsg, message))


def geometry_overlay_batch(body: Any, *, ignore_analyst_param: bool) -> GeometryRun:
    """``POST geometry/overlay/batch``: pairs ``sourceGeometries[i]`` with ``operateGeometries[i]`` (one operate
    geometry applies to every source). The result is an array, one geometry result per pair; unless
    ``ignoreAnalystParam``, each also repeats its ``sourceGeometry`` and ``operateGeometry``."""
    body = _object(body)
    op = check_operation(body.get("operation"))
    tolerance = _tolerance(body)
    sources, operates = body.get("sourceGeometries"), body.get("operateGeometries")
    if not isinstance(sources, list) or not sources or not isinstance(operates, list) or not operates:
        raise BadRequest("sourceGeometries and operateGeometries must be non-empty arrays of geometries")
    if len(operates) not in (1, len(sources)):
        raise BadRequest(f"operateGeometries must have one geometry or as many as sourceGeometries ({len(sources)}), "
                         f"not {len(operates)}")
    if len(sources) > MAX_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_BATCH} geometries")
    index = [0 if len(operates) == 1 else i for i in range(len(sources))]
    pairs = [_pair(src, operates[j], op, (f"sourceGeometries[{i}]", f"operateGeometries[{j}]"))
             for i, (src, j) in enumerate(zip(sources, index, strict=True))]
    decoded_operates = [pairs[i].operate for i in ([0] if len(operates) == 1 else range(len(pairs)))]

    def render(geoms: list[BaseGeometry | None]) -> list[dict[str, Any]]:
        out = []
        for i, (pair, geom) in enumerate(zip(pairs, geoms, strict=True)):
            notes = "; ".join([*pair.source.notes, *pair.operate.notes]) or None
            item = geometry_result(geom, pair.epsg, notes)
            if not ignore_analyst_param:
                item.update(sourceGeometry=sources[i], operateGeometry=operates[index[i]])
            out.append(item)
        return out

    return _overlay_run(op, tolerance, pairs, decoded_operates, render)


# --- coordinate transfer ------------------------------------------------------------------------------

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


def coordtransfer(body: Any) -> GeometryRun:
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
    request = request_of(_op("reproject"), {"target_crs": target}, {"input": _ref(geoms, source)})
    layers = {"input": _checked(layer(geoms, src_crs), "sourcePoints" if points is not None else "sourceGeometries")}

    def render(output: AnalysisOutput) -> list[dict[str, Any] | None]:
        return [geometry_json(g, target, gid=gid) for g, gid in zip(output.gdf.geometry, ids, strict=True)]

    return GeometryRun(request, layers, render)
