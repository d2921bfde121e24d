"""Shapely <-> SuperMap Geometry JSON (``id``, ``type``, ``parts``, ``partTopo``, ``points``, ``prjCoordSys``)."""

from __future__ import annotations

from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry


def _points(coords: Any) -> list[dict[str, float]]:
    return [{"x": float(c[0]), "y": float(c[1])} for c in coords]


def to_supermap(geom: BaseGeometry, *, gid: int = 0, epsg: int | None = None) -> dict[str, Any]:
    """Convert a geometry to SuperMap Geometry JSON; regions carry ``partTopo`` (1 island, -1 hole)."""
    parts: list[int] = []
    topo: list[int] = []
    points: list[dict[str, float]] = []
    kind = geom.geom_type
    if kind in {"Point", "MultiPoint"}:
        sm_type = "POINT"
        for p in getattr(geom, "geoms", [geom]):
            points += _points(p.coords)
            parts.append(1)
    elif kind in {"LineString", "MultiLineString", "LinearRing"}:
        sm_type = "LINE"
        for line in getattr(geom, "geoms", [geom]):
            points += _points(line.coords)
            parts.append(len(line.coords))
    elif kind in {"Polygon", "MultiPolygon"}:
        sm_type = "REGION"
        for poly in getattr(geom, "geoms", [geom]):
            for ring, sign in [(poly.exterior, 1), *((r, -1) for r in poly.interiors)]:
                points += _points(ring.coords)
                parts.append(len(ring.coords))
                topo.append(sign)
    else:
        raise ValueError(f"cannot express {kind} as SuperMap geometry")
    out: dict[str, Any] = {"id": gid, "type": sm_type, "parts": parts, "points": points, "style": None,
                           "prjCoordSys": {"epsgCode": epsg} if epsg else None}
    if sm_type == "REGION":
        out["partTopo"] = topo
        centre = shapely.point_on_surface(geom)
        out["center"] = {"x": centre.x, "y": centre.y}
    return out
