"""SuperMap Geometry JSON -> Shapely (the reverse of ``geometry.to_supermap``).

A SuperMap region is a flat list of rings (``parts`` gives each ring's vertex count). Clients never send
``partTopo``, so which rings are holes is decided here by true ring containment: rings are taken from
the largest to the smallest area, a ring inside an odd number of other rings is a hole of the smallest
ring that contains it, any other ring is an island (the even-odd rule, as iServer draws regions). This
uses the rings themselves (``covers``), never their bounding boxes, so an island inside a hole's
bounding box but outside the hole stays an island. Vertex and ring order are kept, so a region
round-trips through ``to_supermap`` unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from geoservice.errors import BadRequest

KINDS = {"POINT": "POINT", "LINE": "LINE", "REGION": "REGION", "LINEM": "LINE", "POINTEPS": "POINT",
         "LINEEPS": "LINE", "REGIONEPS": "REGION"}
MAX_POINTS = 5_000_000


@dataclass
class Decoded:
    """A decoded geometry: the Shapely geometry, its EPSG code (None: not given) and repair notes."""

    geom: BaseGeometry
    epsg: int | None
    kind: str
    notes: list[str] = field(default_factory=list)


def epsg_of(obj: Any, where: str) -> int | None:
    """Return ``prjCoordSys.epsgCode`` of a geometry (or of a ``PrjCoordSys`` object), None when absent."""
    prj = obj.get("prjCoordSys") if isinstance(obj, dict) and "prjCoordSys" in obj else obj
    if prj is None:
        return None
    if not isinstance(prj, dict):
        raise BadRequest(f"{where}.prjCoordSys must be an object such as {{\"epsgCode\": 4326}}")
    code = prj.get("epsgCode")
    if code is None:
        return None
    if isinstance(code, bool) or not isinstance(code, int | float) or code != int(code) or code <= 0:
        raise BadRequest(f"{where}.prjCoordSys.epsgCode must be a positive integer EPSG code, got {code!r}")
    return int(code)


def from_supermap(obj: Any, where: str = "sourceGeometry", *, epsg: int | None = None) -> Decoded:
    """Decode one SuperMap geometry.

    Args:
        obj: the Geometry JSON (``type``, ``points``, optional ``parts``; ``partTopo`` is ignored).
        where: the request field it came from, named in errors.
        epsg: the EPSG code to use when the geometry's own ``prjCoordSys`` gives none.

    Raises:
        BadRequest: a missing or unknown type, bad coordinates, ``parts`` that do not add up, too few
            vertices for a part.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"{where} must be a SuperMap geometry object with 'type' and 'points'")
    raw_type = obj.get("type")
    kind = KINDS.get(raw_type.upper()) if isinstance(raw_type, str) else None
    if kind is None:
        raise BadRequest(f"{where}.type {raw_type!r} is not supported; use POINT, LINE or REGION")
    coords = _coordinates(obj.get("points"), where)
    parts = _parts(obj.get("parts"), len(coords), kind, where)
    bounds = np.cumsum([0, *parts])
    pieces = [coords[bounds[i]:bounds[i + 1]] for i in range(len(parts))]
    own = epsg_of(obj, where)
    decoded = Decoded(_build(kind, pieces, where), own if own is not None else epsg, kind)
    if kind == "REGION" and not decoded.geom.is_valid:
        reason = shapely.is_valid_reason(decoded.geom)
        fixed = shapely.make_valid(decoded.geom, method="structure", keep_collapsed=False)
        decoded.geom = _polygonal(fixed)
        decoded.notes.append(f"{where} was not a valid region ({reason}) and was repaired")
    return decoded


def _coordinates(points: Any, where: str) -> np.ndarray:
    if not isinstance(points, list) or not points:
        raise BadRequest(f"{where}.points must be a non-empty array of {{\"x\": ..., \"y\": ...}}")
    if len(points) > MAX_POINTS:
        raise BadRequest(f"{where} has more than {MAX_POINTS} points")
    out = np.empty((len(points), 2))
    for i, p in enumerate(points):
        x = p.get("x") if isinstance(p, dict) else None
        y = p.get("y") if isinstance(p, dict) else None
        if not _number(x) or not _number(y):
            raise BadRequest(f"{where}.points[{i}] must have finite numeric 'x' and 'y', got {p!r}"[:300])
        out[i] = (x, y)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _parts(parts: Any, n: int, kind: str, where: str) -> list[int]:
    if parts is None or parts == []:
        return [1] * n if kind == "POINT" else [n]  # iserver-cli and hand-written bodies omit parts
    if not isinstance(parts, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0
                                              for p in parts):
        raise BadRequest(f"{where}.parts must be an array of positive vertex counts, got {parts!r}"[:300])
    if sum(parts) != n:
        raise BadRequest(f"{where}.parts adds up to {sum(parts)} vertices but there are {n} points")
    return list(parts)


def _build(kind: str, pieces: list[np.ndarray], where: str) -> BaseGeometry:
    if kind == "POINT":
        points = [Point(p) for piece in pieces for p in piece]
        return points[0] if len(points) == 1 else MultiPoint(points)
    if kind == "LINE":
        for i, piece in enumerate(pieces):
            if len(piece) < 2:
                raise BadRequest(f"{where}: part {i} of the line has {len(piece)} point; a line part needs 2")
        lines = [LineString(piece) for piece in pieces]
        return lines[0] if len(lines) == 1 else MultiLineString(lines)
    return assemble_region([_ring(piece, i, where) for i, piece in enumerate(pieces)])


def _ring(piece: np.ndarray, i: int, where: str) -> np.ndarray:
    if len(piece) and not np.array_equal(piece[0], piece[-1]):
        piece = np.vstack([piece, piece[:1]])  # close it (iServer expects closed rings; be lenient)
    if len(np.unique(piece, axis=0)) < 3:
        raise BadRequest(f"{where}: part {i} of the region has fewer than 3 distinct points")
    return piece


def assemble_region(rings: list[np.ndarray]) -> BaseGeometry:
    """Group closed rings into polygons with holes by containment (even-odd), keeping their order."""
    polys = [Polygon(r) for r in rings]
    if len(polys) == 1:
        return polys[0]
    areas = np.array([abs(_signed_area(r)) for r in rings])
    order = np.argsort(-areas, kind="stable")
    tree = shapely.STRtree(polys)
    depth = np.zeros(len(polys), dtype=int)
    parent = np.full(len(polys), -1)
    rank = np.empty(len(polys), dtype=int)
    rank[order] = np.arange(len(polys))
    for i in order:
        candidates = [j for j in tree.query(polys[i]) if rank[j] < rank[i]]
        containers = [j for j in candidates if polys[j].covers(polys[i])]
        if containers:
            inner = max(containers, key=lambda j: rank[j])  # the smallest ring that contains it
            depth[i] = depth[inner] + 1
            parent[i] = inner
    holes: dict[int, list[int]] = {}
    for i in range(len(polys)):
        if depth[i] % 2:
            holes.setdefault(int(parent[i]), []).append(i)
    out = [Polygon(rings[i], [rings[h] for h in holes.get(i, [])]) for i in range(len(polys)) if depth[i] % 2 == 0]
    return out[0] if len(out) == 1 else MultiPolygon(out)


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2.0


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polys = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")]
    merged = shapely.union_all(polys) if polys else Polygon()
    return merged
