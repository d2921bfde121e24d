"""iServer's spatial analyst semantics on single geometries: buffer settings, overlay operations.

Pure (Shapely, pyproj and the analysis core; no database or HTTP). The units rule of iServer: a
geometry buffer's distance is in the units of the geometry's coordinate system (degrees for EPSG:4326)
and ``radiusUnit`` is ignored, unless the caller opts in to honouring ``radiusUnit`` (then the buffer
goes through ``geoservice.analysis.buffer``: metres on the ground in a local projection for geographic
data, the CRS's own unit for projected data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pyproj import CRS
from shapely.geometry import GeometryCollection
from shapely.geometry.base import BaseGeometry

from geoservice.analysis.buffer import BufferParams, buffer, buffer_planar
from geoservice.analysis.overlay import keep_dimension
from geoservice.errors import BadRequest

#: Metres per iServer ``radiusUnit``.
RADIUS_UNITS = {"METER": 1.0, "KILOMETER": 1000.0, "MILE": 1609.344, "YARD": 0.9144, "FOOT": 0.3048,
                "INCH": 0.0254, "CENTIMETER": 0.01, "DECIMETER": 0.1, "MILLIMETER": 0.001}
MAX_SEMICIRCLE_SEGMENTS = 128  # quad_segs <= 64, the analysis core's limit
OPERATIONS = ("CLIP", "ERASE", "IDENTITY", "INTERSECT", "UNION", "UPDATE", "XOR")
REGION_SOURCE_ONLY = {"UNION", "UPDATE", "XOR"}
_DIMENSION = {"POINT": 0, "LINE": 1, "REGION": 2}


@dataclass(frozen=True)
class BufferSpec:
    """A parsed ``BufferAnalystParameter``: distances as given (in ``radius_unit`` or CRS units)."""

    end_type: str  # ROUND | FLAT
    left: float
    right: float
    semicircle_segments: int
    radius_unit: str

    @property
    def quad_segs(self) -> int:
        """Segments per quarter circle: half of the segments per half circle, rounded up."""
        return max(1, math.ceil(self.semicircle_segments / 2))

    def metres(self, value: float) -> float:
        return value * RADIUS_UNITS[self.radius_unit]


def _distance(obj: Any, where: str) -> float | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        if obj.get("exp") not in (None, ""):
            raise BadRequest(f"{where}.exp (a field expression) is not supported; give a numeric 'value'")
        obj = obj.get("value")
    if obj is None:
        return None
    if isinstance(obj, bool) or not isinstance(obj, int | float) or not math.isfinite(obj):
        raise BadRequest(f"{where}.value must be a number, got {obj!r}")
    return float(obj)


def parse_buffer_setting(obj: Any, where: str) -> BufferSpec:
    """Parse and check a ``BufferAnalystParameter`` (``analystParameter`` / ``bufferAnalystParameter``).

    Raises:
        BadRequest: missing or non-positive left distance (iServer: "左缓冲距离不能小于等于0"), a
            negative right distance, an unknown end type or radius unit, a bad segment count.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"{where} is required: an object with leftDistance, endType, radiusUnit ...")
    end_type = str(obj.get("endType") or "ROUND").upper()
    if end_type not in ("ROUND", "FLAT"):
        raise BadRequest(f"{where}.endType must be ROUND or FLAT, got {obj.get('endType')!r}")
    left = _distance(obj.get("leftDistance"), f"{where}.leftDistance")
    right = _distance(obj.get("rightDistance"), f"{where}.rightDistance")
    if left is None:
        left = right  # iserver-cli may send only one side
    if left is None:
        raise BadRequest(f"{where}.leftDistance is required (the buffer distance)")
    if left <= 0:
        raise BadRequest(f"{where}.leftDistance must be greater than 0 (got {left:g}); iServer does not erode")
    if right is None:
        right = left
    if right < 0:
        raise BadRequest(f"{where}.rightDistance must not be negative (got {right:g})")
    segments = obj.get("semicircleLineSegment", 4)
    segments = 4 if segments is None else segments
    if isinstance(segments, bool) or not isinstance(segments, int | float) or segments != int(segments) \
            or not 1 <= segments <= MAX_SEMICIRCLE_SEGMENTS:
        raise BadRequest(f"{where}.semicircleLineSegment must be an integer from 1 to {MAX_SEMICIRCLE_SEGMENTS}, "
                         f"got {segments!r}")
    unit = str(obj.get("radiusUnit") or "METER").upper()
    if unit not in RADIUS_UNITS:
        raise BadRequest(f"{where}.radiusUnit must be one of {', '.join(RADIUS_UNITS)}, got {obj.get('radiusUnit')!r}")
    return BufferSpec(end_type, left, right, int(segments), unit)


def _is_line(geom: BaseGeometry) -> bool:
    return geom.geom_type in ("LineString", "MultiLineString", "LinearRing")


def buffer_geometry(geom: BaseGeometry, spec: BufferSpec, crs: CRS | None, honour_unit: bool) -> BaseGeometry:
    """Buffer one geometry the way iServer does.

    Args:
        geom: the source geometry, in ``crs``.
        spec: distances; ``FLAT`` applies to lines (left and right sides may differ); points and regions
            are always buffered with round ends, as iServer supports only ROUND for them.
        crs: the geometry's CRS (None: unknown, the distance is in coordinate units).
        honour_unit: distances are ``value x radiusUnit`` (metres on the ground for geographic data) instead
            of coordinate units. Needs ``crs``.

    Returns:
        The buffer polygon (in ``crs``).
    """
    flat = spec.end_type == "FLAT" and _is_line(geom)
    if honour_unit and crs is not None:
        return _buffer_metric(geom, spec, crs, flat)
    if not flat:
        return buffer_planar(np.array([geom]), spec.left, quad_segs=spec.quad_segs)[0]
    if spec.left == spec.right:
        return buffer_planar(np.array([geom]), spec.left, quad_segs=spec.quad_segs, cap_style="flat")[0]
    sides = [buffer_planar(np.array([geom]), d, quad_segs=spec.quad_segs, single_sided=True)[0]
             for d in (spec.left, -spec.right) if d != 0]
    return shapely.union_all(sides)


def _buffer_metric(geom: BaseGeometry, spec: BufferSpec, crs: CRS, flat: bool) -> BaseGeometry:
    frame = GeoDataFrame(geometry=[geom], crs=crs)

    def run(metres: float, **style: Any) -> BaseGeometry:
        params = BufferParams.model_validate({
            "input": {"geojson": {"type": "FeatureCollection", "features": []}},
            "distance": {"value": metres, "unit": "m"}, "quad_segs": spec.quad_segs, **style})
        return buffer(frame, params).gdf.geometry.iloc[0]

    try:
        if not flat:
            return run(spec.metres(spec.left))
        if spec.left == spec.right:
            return run(spec.metres(spec.left), cap_style="flat")
        sides = [run(d, single_sided=True) for d in (spec.metres(spec.left), -spec.metres(spec.right)) if d != 0]
        return shapely.union_all(sides)
    except ValueError as exc:  # pydantic: a distance beyond the core's 1,000 km limit
        raise BadRequest(f"buffer distance: {_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors()[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


def check_operation(value: Any, where: str = "operation") -> str:
    """Return the overlay operation in upper case, or raise."""
    op = str(value).upper() if isinstance(value, str) else None
    if op not in OPERATIONS:
        raise BadRequest(f"{where} must be one of {', '.join(OPERATIONS)}, got {value!r}")
    return op


def check_overlay_types(op: str, source_kind: str, operate_kind: str, where: str) -> None:
    """iServer's rules: the operate geometry is a region (a line too for INTERSECT); UNION, UPDATE and
    XOR need a region source."""
    if op in REGION_SOURCE_ONLY and source_kind != "REGION":
        raise BadRequest(f"{where}: {op} needs a REGION source geometry, got {source_kind}")
    allowed = ("REGION", "LINE") if op == "INTERSECT" else ("REGION",)
    if operate_kind not in allowed:
        raise BadRequest(f"{where}: the operate geometry of {op} must be a {' or '.join(allowed)}, got {operate_kind}")


def overlay_geometries(a: BaseGeometry, b: BaseGeometry, op: str, source_kind: str,
                       tolerance: float | None = None) -> BaseGeometry:
    """Overlay two geometries (planar, GEOS OverlayNG) and keep the source's dimension.

    CLIP and INTERSECT: a ∩ b; ERASE: a − b; UNION: a ∪ b; XOR: a Δ b. IDENTITY returns the pieces
    a ∩ b and a − b as separate parts, UPDATE the pieces a − b and b (the point of both is the split;
    their total area is that of a, resp. a ∪ b). ``tolerance`` > 0 snaps to that grid.
    """
    grid = tolerance if tolerance and tolerance > 0 else None
    try:
        if op in ("CLIP", "INTERSECT"):
            out = shapely.intersection(a, b, grid_size=grid)
        elif op == "ERASE":
            out = shapely.difference(a, b, grid_size=grid)
        elif op == "UNION":
            out = shapely.union(a, b, grid_size=grid)
        elif op == "XOR":
            out = shapely.symmetric_difference(a, b, grid_size=grid)
        elif op == "IDENTITY":
            out = _pieces([shapely.intersection(a, b, grid_size=grid), shapely.difference(a, b, grid_size=grid)])
        else:  # UPDATE
            out = _pieces([shapely.difference(a, b, grid_size=grid), b])
    except shapely.errors.GEOSException as exc:
        raise BadRequest(f"overlay failed ({exc}); give a tolerance to snap the geometries") from None
    dim = _DIMENSION[source_kind] if op not in ("UPDATE",) else 2
    if op == "INTERSECT" and source_kind == "LINE" and b.geom_type in ("LineString", "MultiLineString"):
        return out  # line x line: crossings are points, overlaps lines: keep both
    return keep_dimension(np.array([out], dtype=object), np.array([dim]))[0] or GeometryCollection()


def _pieces(parts: list[BaseGeometry]) -> BaseGeometry:
    """Collect the parts of several results into one multi-geometry without dissolving them."""
    flat = [p for g in parts if g is not None and not g.is_empty for p in getattr(g, "geoms", [g])]
    polys = [p for p in flat if p.geom_type == "Polygon"]
    if polys and len(polys) == len(flat):
        return shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]
    return GeometryCollection(flat)
