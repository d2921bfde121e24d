"""Layer summaries shared by the analyses: counts, extent, geometry types and geodesic measures."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pyproj import CRS, Geod

from geoservice.analysis.crs import CRS84, get_transformer
from geoservice.analysis.errors import MissingCRS, TransformationUnavailable

#: Geodesic measures are on the WGS 84 ellipsoid.
_GEOD = Geod(ellps="WGS84")
_POLYGON = shapely.GeometryType.POLYGON
_LINEAL = (shapely.GeometryType.LINESTRING, shapely.GeometryType.LINEARRING)
_TYPE_NAMES = {
    int(shapely.GeometryType.POINT): "Point",
    int(shapely.GeometryType.LINESTRING): "LineString",
    int(shapely.GeometryType.LINEARRING): "LinearRing",
    int(shapely.GeometryType.POLYGON): "Polygon",
    int(shapely.GeometryType.MULTIPOINT): "MultiPoint",
    int(shapely.GeometryType.MULTILINESTRING): "MultiLineString",
    int(shapely.GeometryType.MULTIPOLYGON): "MultiPolygon",
    int(shapely.GeometryType.GEOMETRYCOLLECTION): "GeometryCollection",
}


def geodesic_summary(gdf: GeoDataFrame, *, always_xy: bool = True) -> dict[str, Any]:
    """Summarise a layer: feature count, extent, geometry types and geodesic area or length.

    Args:
        gdf: the layer; its CRS must be set.
        always_xy: False if the coordinates are in the CRS's authority axis order (e.g. lat/lon).

    Returns:
        ``feature_count``; ``extent`` ``[minx, miny, maxx, maxy]`` in the layer's CRS (None when there
        are no coordinates); ``geometry_types`` (sorted); ``geodesic_area_m2`` (square metres, when
        the layer has polygons) and ``geodesic_length_m`` (metres, when it has lines), both on the
        WGS 84 ellipsoid, None if some coordinates cannot be brought to longitude/latitude.
    """
    series = gdf.geometry
    crs = series.crs
    if crs is None:
        raise MissingCRS("the layer has no CRS", field="input")
    geoms = np.asarray(series.values, dtype=object)
    summary: dict[str, Any] = {
        "feature_count": len(gdf),
        "extent": _extent(geoms),
        "geometry_types": _geometry_types(geoms),
    }
    parts = _flat_parts(geoms)
    types = shapely.get_type_id(parts)
    polygons = parts[types == _POLYGON]
    lines = parts[np.isin(types, _LINEAL)]
    if len(polygons) == 0 and len(lines) == 0:
        return summary
    try:
        transformer = None if always_xy and _is_crs84(crs) else get_transformer(
            crs, CRS84, always_xy=always_xy, allow_ballpark=True)[0]
    except TransformationUnavailable:  # e.g. an engineering CRS, with no link to the Earth
        return {**summary, **({"geodesic_area_m2": None} if len(polygons) else {}),
                **({"geodesic_length_m": None} if len(lines) else {})}
    if len(polygons):
        summary["geodesic_area_m2"] = _area(polygons, transformer)
    if len(lines):
        summary["geodesic_length_m"] = _length(lines, transformer)
    return summary


@lru_cache(maxsize=64)
def _crs84_like(srs: str) -> bool:
    crs = CRS.from_user_input(srs)
    return bool(crs.is_geographic) and crs.equals(CRS84, ignore_axis_order=True)


def _is_crs84(crs: Any) -> bool:
    """Whether x/y coordinates in ``crs`` are already WGS 84 longitude/latitude (EPSG:4326, OGC:CRS84)."""
    return _crs84_like(getattr(crs, "srs", None) or str(crs))


def _extent(geoms: np.ndarray) -> list[float] | None:
    bounds = shapely.total_bounds(geoms)
    if not np.isfinite(bounds).all():
        return None
    return [float(v) for v in bounds]


def _geometry_types(geoms: np.ndarray) -> list[str]:
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    return sorted(_TYPE_NAMES[int(t)] for t in np.unique(shapely.get_type_id(geoms[present])))


def _flat_parts(geoms: np.ndarray) -> np.ndarray:
    """Return the single-part geometries of ``geoms`` (collections and multi-parts exploded)."""
    parts = shapely.get_parts(geoms[~shapely.is_missing(geoms)])
    while True:
        nested = shapely.get_num_geometries(parts) > 1
        multi = np.isin(
            shapely.get_type_id(parts),
            (
                shapely.GeometryType.MULTIPOINT,
                shapely.GeometryType.MULTILINESTRING,
                shapely.GeometryType.MULTIPOLYGON,
                shapely.GeometryType.GEOMETRYCOLLECTION,
            ),
        )
        if not (nested | multi).any():
            return parts[~shapely.is_empty(parts)]
        parts = shapely.get_parts(parts)


def _lonlat(geoms: np.ndarray, transformer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    lon, lat = coords[:, 0].copy(), coords[:, 1].copy()
    if transformer is not None:  # None: the coordinates are WGS 84 lon/lat already
        transformer.transform(lon, lat, inplace=True, errcheck=False)
    return lon, lat, index


def _length(lines: np.ndarray, transformer: Any) -> float | None:
    lon, lat, index = _lonlat(lines, transformer)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    same_part = index[1:] == index[:-1]
    _, _, dist = _GEOD.inv(lon[:-1][same_part], lat[:-1][same_part], lon[1:][same_part], lat[1:][same_part])
    return float(np.sum(dist))


def _area(polygons: np.ndarray, transformer: Any) -> float | None:
    rings, is_hole = _rings(polygons)
    lon, lat, index = _lonlat(rings, transformer)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    starts = np.searchsorted(index, np.arange(len(rings)))
    ends = np.append(starts[1:], len(index))
    total = 0.0
    # One geodesic polygon computation per ring (in C); |area| makes ring orientation irrelevant.
    for ring, (start, end) in enumerate(zip(starts, ends, strict=True)):
        ring_area = abs(_GEOD.polygon_area_perimeter(lon[start:end], lat[start:end])[0])
        total += -ring_area if is_hole[ring] else ring_area
    return float(total)


def _rings(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return every exterior and interior ring of ``polygons`` and whether each is a hole."""
    exteriors = shapely.get_exterior_ring(polygons)
    counts = shapely.get_num_interior_rings(polygons)
    owners = np.repeat(np.arange(len(polygons)), counts)
    first_hole = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.arange(int(counts.sum())) - first_hole
    holes = shapely.get_interior_ring(polygons[owners], positions)
    rings = np.concatenate([exteriors, holes])
    return rings, np.concatenate([np.zeros(len(exteriors), bool), np.ones(len(holes), bool)])
