"""Antimeridian and pole handling: snapping seams closed, bringing projected results back to lon/lat.

* Antimeridian: results come back with longitudes in [-180, 180], split at +-180 into a MultiPolygon when
  they cross it (RFC 7946 section 3.1.9), never wrapped around the world.
* Poles: a polygon containing a pole is cut along the +-180 meridian and closed along the pole's parallel
  (lon -180..180 at lat +-90), the usual lon/lat form (as Natural Earth's Antarctica). Its geodesic area
  is right, because the edge along lat +-90 has no length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer

from geoservice.analysis.localproj import Geoms, normalise_lon, project, project_grouped

#: Projected coordinates of features touching the antimeridian or a pole are snapped to this grid (metres)
#: so that seams (parts split at +-180, edges along a pole) close up exactly instead of leaving slivers.
SEAM_GRID_M = 1.0e-6


def on_seam(bounds: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Return which (n, 4) vertex bounds (``coord_bounds``) reach the antimeridian or a pole."""
    b = bounds
    return (b[:, 0] <= -180.0) | (b[:, 2] >= 180.0) | (b[:, 1] <= -90.0) | (b[:, 3] >= 90.0)


def close_seams(projected: Geoms, seam: NDArray[np.bool_]) -> Geoms:
    """Snap features that had antimeridian/pole vertices so seams close (see ``SEAM_GRID_M``)."""
    out = projected.copy()
    if seam.any():
        out[seam] = shapely.set_precision(projected[seam], SEAM_GRID_M)
    return out


def pole_points(transformers: Sequence[Transformer], aeqd: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Return (k, 2, 2): the projected (x, y) of the north and south pole in each local CRS.

    Only an aeqd can hold a pole inside a buffer; UTM CRSs (|lat| < 84 with the buffer) get NaN.
    """
    out = np.full((len(transformers), 2, 2), np.nan)
    for k in np.flatnonzero(aeqd).tolist():
        out[k, 0] = transformers[k].transform(0.0, 90.0)
        out[k, 1] = transformers[k].transform(0.0, -90.0)
    return out


def to_lonlat(
    buffered: Geoms,
    index: NDArray[np.intp],
    transformers: Sequence[Transformer],
    poles: NDArray[np.float64],
    centre: NDArray[np.float64],
) -> Geoms:
    """Return projected polygons back in lon/lat, valid, split at +-180 and closed around poles.

    ``buffered[i]`` is in the local CRS of ``transformers[index[i]]``, whose projected poles are
    ``poles[index[i]]`` (``pole_points``); results are brought within 180 degrees of ``centre[i]`` first.
    """
    has_pole = np.zeros(len(buffered), dtype=bool)
    xy = poles[index]  # (n, 2, 2); NaN where the CRS cannot reach a pole
    near = np.flatnonzero(~np.isnan(xy[:, 0, 0]))
    if len(near):
        g, north, south = buffered[near], xy[near, 0], xy[near, 1]
        has_pole[near] = shapely.contains_xy(g, *north.T) | shapely.contains_xy(g, *south.T)
    back = project_grouped(buffered, index, transformers, inverse=True)
    out = normalise_lon(back, centre, shapely.bounds(back))
    for i in np.flatnonzero(has_pole):
        k = index[i]
        out[i] = _polar_to_lonlat(buffered[i], transformers[k], [tuple(poles[k, 0]), tuple(poles[k, 1])])
    return split_antimeridian(out)


def split_antimeridian(geoms: Geoms) -> Geoms:
    """Return polygons cut at +-180 (pieces shifted into [-180, 180]) and clipped to |lat| <= 90."""
    bounds = shapely.bounds(geoms)
    out = geoms.copy()
    bad = (bounds[:, 0] < -180) | (bounds[:, 2] > 180) | (bounds[:, 1] < -90) | (bounds[:, 3] > 90)
    if not bad.any():
        return out
    sel = geoms[bad]
    lo = int(np.floor((np.nanmin(bounds[bad, 0]) + 180.0) / 360.0))
    hi = int(np.floor((np.nanmax(bounds[bad, 2]) + 180.0) / 360.0))
    pieces = []
    for k in range(lo, hi + 1):
        window = shapely.box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        part = shapely.intersection(sel, window)
        pieces.append(shapely.transform(part, lambda c, k=k: c - [360.0 * k, 0.0]))
    merged = shapely.union_all(np.stack(pieces, axis=1), axis=1)
    out[bad] = polygonal(merged)
    return out


def polygonal(geoms: Geoms) -> Geoms:
    """Keep only the polygonal parts (window cuts can leave slivers of lower dimension)."""
    parts, idx = shapely.get_parts(geoms, return_index=True)
    keep = shapely.get_type_id(parts) == 3
    multi = np.full(len(geoms), None, dtype=object)  # filled in place (the return value is [] when no part is kept)
    shapely.multipolygons(parts[keep], indices=idx[keep], out=multi)
    n_parts = shapely.get_num_geometries(multi)
    single = n_parts == 1
    multi[single] = shapely.get_geometry(multi[single], 0)
    multi[n_parts == 0] = shapely.from_wkt("POLYGON EMPTY")
    return multi


def _polar_to_lonlat(geom: shapely.Geometry, tr: Transformer, pole_xy: list) -> shapely.Geometry:
    """Return a projected polygon that contains a pole as a valid lon/lat polygon."""
    pieces = []
    # densified, so the seam crossing (interpolated in lon/lat) stays on the projected edge
    geom = shapely.segmentize(geom, max(geom.length / 4000.0, 1.0))
    for part in shapely.get_parts(geom):
        contains = [part.contains(shapely.Point(px, py)) for px, py in pole_xy]
        if not any(contains):
            pieces.append(_unwrapped_polygon(project(np.array([part]), tr, inverse=True)[0]))
            continue
        pole_lat = 90.0 if contains[0] else -90.0
        ext = np.column_stack(tr.transform(*np.asarray(part.exterior.coords).T, direction="INVERSE"))
        poly = shapely.make_valid(shapely.Polygon(_polar_ring(ext, pole_lat)))
        holes = [np.asarray(r.coords) for r in part.interiors]
        for h in holes:
            ring = np.column_stack(tr.transform(*h.T, direction="INVERSE"))
            hole = shapely.Polygon(np.column_stack([np.unwrap(ring[:, 0], period=360.0), ring[:, 1]]))
            poly = poly.difference(split_antimeridian(np.array([hole]))[0])
        pieces.append(poly)
    merged = shapely.union_all(split_antimeridian(np.array(pieces, dtype=object)))
    return polygonal(np.array([merged]))[0]


def _unwrapped_polygon(poly: shapely.Geometry) -> shapely.Geometry:
    """Return a lon/lat polygon with each ring's longitudes made continuous (no jumps of 360)."""

    def ring(coords: np.ndarray) -> np.ndarray:
        return np.column_stack([np.unwrap(coords[:, 0], period=360.0), coords[:, 1]])

    shell = ring(np.asarray(poly.exterior.coords))
    shift = 360.0 * np.round(shell[0, 0] / 360.0)
    holes = [ring(np.asarray(r.coords)) - [shift, 0.0] for r in poly.interiors]
    return shapely.Polygon(shell - [shift, 0.0], holes)


def _polar_ring(ring: np.ndarray, pole_lat: float) -> np.ndarray:
    """Return a ring around a pole (lon/lat) as a closed ring from -180 to 180 via the pole."""
    lon = np.unwrap(ring[:, 0], period=360.0)
    lat = ring[:, 1]
    step = 1.0 if lon[-1] > lon[0] else -1.0
    lon = lon - 360.0 * np.floor((lon[0] + 180.0) / 360.0)
    seam = 180.0 * step  # first meridian +-180 the ring meets going its way round
    after = np.flatnonzero(step * (lon - seam) >= 0)
    i = int(after[0]) if len(after) else len(lon) - 1  # first vertex at or past the seam
    t = (seam - lon[i - 1]) / (lon[i] - lon[i - 1]) if i > 0 and lon[i] != lon[i - 1] else 1.0
    lat_c = lat[i - 1] + t * (lat[i] - lat[i - 1]) if i > 0 else lat[0]
    body_lon = np.r_[lon[i:-1], lon[:i] + 360.0 * step] - 360.0 * step
    body_lat = np.r_[lat[i:-1], lat[:i]]
    lons = np.r_[-seam, body_lon, seam, seam, -seam, -seam]
    lats = np.r_[lat_c, body_lat, lat_c, pole_lat, pole_lat, lat_c]
    return np.column_stack([lons, lats])
