"""Geometries and helpers shared by the SuperMap tests (not fixtures)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

POINT = shapely.Point(116.39, 39.9)
LINE = LineString([(116.30, 39.90), (116.35, 39.95), (116.42, 39.93)])
HOLED = Polygon(box(116.3, 39.8, 116.5, 40.0).exterior.coords, [box(116.35, 39.85, 116.45, 39.95).exterior.coords])
OPERATE = box(116.40, 39.90, 116.60, 40.10)
TWO_PARTS = MultiPolygon([HOLED, box(116.6, 39.8, 116.7, 39.9)])


def gj(geom: BaseGeometry) -> dict[str, Any]:
    return dict(mapping(geom))


def sm_points(coords: Any) -> list[dict[str, float]]:
    return [{"x": float(x), "y": float(y)} for x, y in coords]


def from_result(g: dict[str, Any] | None) -> BaseGeometry:
    """A SuperMap result geometry to Shapely, grouping holes by ``partTopo`` the way the iClient does
    (independently of the server's decoder)."""
    if g is None:
        return Polygon()
    pts = [(p["x"], p["y"]) for p in g["points"]]
    parts, start = [], 0
    for n in g["parts"]:
        parts.append(pts[start:start + n])
        start += n
    if g["type"] == "POINT":
        return shapely.MultiPoint(pts) if len(pts) > 1 else shapely.Point(pts[0])
    if g["type"] == "LINE":
        return shapely.MultiLineString(parts) if len(parts) > 1 else LineString(parts[0])
    assert len(g["partTopo"]) == len(g["parts"]), "a region result must carry partTopo"
    polys: list[list[Any]] = []
    for ring, topo in zip(parts, g["partTopo"], strict=True):
        if topo == 1:
            polys.append([ring])
        else:
            polys[-1].append(ring)
    out = [Polygon(p[0], p[1:]) for p in polys]
    return out[0] if len(out) == 1 else MultiPolygon(out)


def from_geojson(g: dict[str, Any] | None) -> BaseGeometry:
    return shape(g) if g else Polygon()


def postgis(pg: psycopg.Connection, expression: str, *geoms: BaseGeometry) -> BaseGeometry:
    """Evaluate a PostGIS expression over ``$1, $2 ...`` (given as geometries, SRID 4326) to a geometry."""
    args = ", ".join(f"ST_GeomFromText(%s, 4326) AS g{i + 1}" for i in range(len(geoms)))
    row = pg.execute(f"SELECT ST_AsBinary({expression}) FROM (SELECT {args}) s", [g.wkt for g in geoms]).fetchone()
    assert row is not None
    return shapely.from_wkb(row[0])


def assert_same(ours: BaseGeometry, ref: BaseGeometry, rel: float = 1e-6) -> None:
    """Equal areas (or lengths) and a symmetric difference that is a tiny share of the reference."""
    ours, ref = shapely.make_valid(ours), shapely.make_valid(ref)
    if ref.area > 0:
        assert ours.area == pytest.approx(ref.area, rel=rel)
        assert ours.symmetric_difference(ref).area <= rel * ref.area
    elif ref.length > 0:
        assert ours.length == pytest.approx(ref.length, rel=rel)
        assert ours.symmetric_difference(ref).length <= rel * ref.length
    else:
        assert shapely.equals(ours, ref) or (ours.is_empty and ref.is_empty)

