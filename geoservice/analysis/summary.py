"""Layer summaries shared by the analyses: counts, extent, geometry types and geodesic measures."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pyproj import CRS

from geoservice.analysis.crs import CRS84, get_transformer
from geoservice.analysis.errors import MissingCRS, TransformationUnavailable
from geoservice.analysis.geodesic import line_lengths, ring_areas

_POLYGON = shapely.GeometryType.POLYGON
_LINESTRING, _LINEARRING = shapely.GeometryType.LINESTRING, shapely.GeometryType.LINEARRING
_MULTIPOINT = shapely.GeometryType.MULTIPOINT  # this and higher ids: multi-parts and collections
#: Vertices per block of work: the temporary arrays of a block stay in the CPU cache.
_BLOCK_VERTICES = 1 << 17
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
        WGS 84 ellipsoid, None if some coordinates cannot be brought to longitude/latitude. Both are
        sums over rings and lines computed independently (see ``geodesic``): the figures of the
        chunks of a layer add up to the layer's.
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
    lines = parts[(types == _LINESTRING) | (types == _LINEARRING)]
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
    if len(geoms) == 0:  # e.g. a chunk with no output; total_bounds cannot reduce an empty array
        return None
    bounds = shapely.total_bounds(geoms)
    if not np.isfinite(bounds).all():
        return None
    return [float(v) for v in bounds]


def _geometry_types(geoms: np.ndarray) -> list[str]:
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    return sorted(_TYPE_NAMES[int(t)] for t in np.unique(shapely.get_type_id(geoms[present])))


def _flat_parts(geoms: np.ndarray) -> np.ndarray:
    """Return the single-part geometries of ``geoms`` (collections and multi-parts exploded)."""
    parts = geoms[~shapely.is_missing(geoms)]
    nested = shapely.get_type_id(parts) >= _MULTIPOINT  # multi-parts and collections
    while nested.any():  # only these are exploded: get_parts copies every geometry it is given
        parts = np.concatenate([parts[~nested], shapely.get_parts(parts[nested])])
        nested = shapely.get_type_id(parts) >= _MULTIPOINT
    return parts[~shapely.is_empty(parts)]


def _blocks(geoms: np.ndarray) -> Iterator[np.ndarray]:
    """Split ``geoms`` into runs of about ``_BLOCK_VERTICES`` vertices (a geometry is never split)."""
    ends = np.cumsum(shapely.get_num_coordinates(geoms))
    if len(ends) == 0 or ends[-1] <= _BLOCK_VERTICES:
        yield geoms
        return
    cuts = np.searchsorted(ends, np.arange(_BLOCK_VERTICES, ends[-1], _BLOCK_VERTICES))
    bounds = np.unique(np.concatenate([[0], cuts + 1, [len(geoms)]]).clip(0, len(geoms)))
    for start, end in itertools.pairwise(bounds):
        yield geoms[start:end]


def _lonlat(geoms: np.ndarray, transformer: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the longitudes and latitudes (degrees) of the vertices of ``geoms``; None if some are not finite."""
    coords = shapely.get_coordinates(geoms)
    lon, lat = coords[:, 0].copy(), coords[:, 1].copy()
    if transformer is not None:  # None: the coordinates are WGS 84 lon/lat already
        transformer.transform(lon, lat, inplace=True, errcheck=False)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    return lon, lat


def _length(lines: np.ndarray, transformer: Any) -> float | None:
    total = 0.0
    for block in _blocks(lines):
        lonlat = _lonlat(block, transformer)
        if lonlat is None:
            return None
        sizes = shapely.get_num_coordinates(block)
        total += float(np.sum(line_lengths(*lonlat, np.cumsum(sizes) - sizes)))
    return total


def _area(polygons: np.ndarray, transformer: Any) -> float | None:
    total = 0.0
    for block in _blocks(polygons):
        lonlat = _lonlat(block, transformer)  # polygon by polygon, each exterior ring then its holes
        if lonlat is None:
            return None
        sizes, is_hole = _ring_sizes(block)
        areas = ring_areas(*lonlat, np.cumsum(sizes) - sizes)
        total += float(np.sum(areas[~is_hole]) - np.sum(areas[is_hole]))
    return total


def _ring_sizes(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the vertex count of every ring of ``polygons`` in coordinate order, and whether it is a hole."""
    sizes = shapely.get_num_coordinates(polygons)
    holes = shapely.get_num_interior_rings(polygons)
    if not holes.any():  # the common case: one ring per polygon, no ring geometries built
        return sizes, np.zeros(len(sizes), bool)
    rings = 1 + holes
    first = np.cumsum(rings) - rings  # index of each polygon's exterior ring among all rings
    ring_sizes = np.empty(int(rings.sum()), sizes.dtype)
    ring_sizes[first] = sizes
    holed = np.flatnonzero(holes)
    ring_sizes[first[holed]] = shapely.get_num_coordinates(shapely.get_exterior_ring(polygons[holed]))
    owners = np.repeat(holed, holes[holed])
    positions = np.arange(len(owners)) - np.repeat(np.cumsum(holes[holed]) - holes[holed], holes[holed])
    ring_sizes[first[owners] + 1 + positions] = shapely.get_num_coordinates(
        shapely.get_interior_ring(polygons[owners], positions))
    is_hole = np.ones(len(ring_sizes), bool)
    is_hole[first] = False
    return ring_sizes, is_hole
