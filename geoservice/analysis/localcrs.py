"""Per-feature local projected CRSs for metric work on geographic (lon/lat) data.

Each feature gets the UTM zone of its centre when the feature (with the buffer) fits in that zone, keeps
|lat| < 84 and the UTM scale error stays <= ``UTM_MAX_SCALE_ERROR``; otherwise an azimuthal equidistant
projection centred on the feature (on the pole for features that wrap around one). Features that share a
UTM zone are transformed together (vectorised); aeqd transformers are per feature, built from PROJ pipeline
strings (about 0.1 ms each) and cached.

Multi-part features go part by part. A polygon part too large for any single projection (Russia,
Canada, Antarctica: an aeqd over them would be off by up to 8%) is buffered through its boundary, cut into
short pieces that each get their own local CRS, so the scale error stays <= ~1e-3 everywhere.

Conventions (issue "Buffer"):

* Coordinates are x = longitude, y = latitude in degrees (GeoPandas order, whatever the CRS axis order).
* Local CRSs use the input's own ellipsoid, so going to them and back is a pure projection: no datum shift.
* Antimeridian: results come back with longitudes in [-180, 180], split at +-180 into a MultiPolygon when
  they cross it (RFC 7946 section 3.1.9), never wrapped around the world.
* Poles: a polygon containing a pole is cut along the +-180 meridian and closed along the pole's parallel
  (lon -180..180 at lat +-90), the usual lon/lat form (as Natural Earth's Antarctica). Its geodesic area
  is right, because the edge along lat +-90 has no length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer

from geoservice.analysis.errors import InvalidGeometry, UnknownCRS

#: Mean Earth radius (IUGG), used only for scale-error estimates.
EARTH_RADIUS_M = 6_371_008.8
UTM_K0 = 0.9996
UTM_MAX_LAT = 84.0
#: UTM's own error at a zone edge on the equator is ~9.8e-4; beyond this a centred aeqd does better.
UTM_MAX_SCALE_ERROR = 1.0e-3
#: Projected coordinates of features touching the antimeridian or a pole are snapped to this grid (metres)
#: so that seams (parts split at +-180, edges along a pole) close up exactly instead of leaving slivers.
SEAM_GRID_M = 1.0e-6

#: Input edges are split to at most this length (degrees) before projecting.
MAX_EDGE_DEG = 0.05
#: Polygon parts whose single aeqd would exceed this scale error are buffered through their boundary,
#: cut into pieces of at most ``PIECE_VERTICES`` vertices (each piece then fits a UTM zone or small aeqd).
SPLIT_SCALE_ERROR = 1.0e-3
PIECE_VERTICES = 100

Geoms = NDArray[np.object_]


@dataclass(frozen=True)
class Extents:
    """Per-feature lon/lat extents; ``west``/``east`` bound the smallest longitude interval covering it."""

    west: NDArray[np.float64]
    east: NDArray[np.float64]
    south: NDArray[np.float64]
    north: NDArray[np.float64]

    @property
    def centre(self) -> NDArray[np.float64]:
        """Return the centre longitude of each feature's interval, in [-180, 180)."""
        return wrap_lon((self.west + self.east) / 2.0)


@dataclass(frozen=True)
class LocalCrs:
    """A local working CRS: ``kind`` is "utm" or "aeqd"."""

    kind: str
    zone: int = 0
    south: bool = False
    lat_0: float = 0.0
    lon_0: float = 0.0

    def proj_step(self) -> str:
        """Return the PROJ operation (without ellipsoid) that projects lon/lat to this CRS."""
        if self.kind == "utm":
            return f"+proj=utm +zone={self.zone}" + (" +south" if self.south else "")
        return f"+proj=aeqd +lat_0={self.lat_0!r} +lon_0={self.lon_0!r}"

    def scale_error(self, proj_bounds: NDArray[np.float64], max_radius: NDArray[np.float64]) -> NDArray:
        """Return the largest |scale - 1| over each feature's projected extent (spherical formulas).

        Args:
            proj_bounds: (n, 4) bounds in this CRS (metres), of the input and the result together.
            max_radius: (n,) largest distance (metres) of any vertex from the projection origin.
        """
        if self.kind == "utm":
            off = np.abs(proj_bounds[:, [0, 2]] - 500_000.0)
            far = off.max(axis=1)
            near = np.where((proj_bounds[:, 0] <= 5e5) & (proj_bounds[:, 2] >= 5e5), 0.0, off.min(axis=1))
            k = UTM_K0 * np.cosh(np.stack([near, far]) / (UTM_K0 * EARTH_RADIUS_M))
            return np.abs(k - 1.0).max(axis=0)
        rho = np.minimum(max_radius / EARTH_RADIUS_M, np.pi)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(rho > 1e-12, rho / np.sin(rho) - 1.0, 0.0)
        return np.where(np.isfinite(err), err, np.inf)


def wrap_lon(lon: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return longitudes wrapped into [-180, 180)."""
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def lonlat_extents(geoms: Geoms) -> Extents:
    """Return each feature's extent, taking the antimeridian into account (empty features give NaN).

    The longitude interval is the complement of the largest gap between the feature's vertex longitudes
    around the circle, so a feature split at +-180 (Fiji, Chukotka) gets e.g. west=177, east=182.
    """
    n = len(geoms)
    out = {k: np.full(n, np.nan) for k in ("west", "east", "south", "north")}
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    if len(coords):
        lon, lat = wrap_lon(coords[:, 0]), coords[:, 1]
        order = np.lexsort((lon, idx))
        lon_s, lat_s, idx_s = lon[order], lat[order], idx[order]
        start = np.flatnonzero(np.r_[True, idx_s[1:] != idx_s[:-1]])
        end = np.r_[start[1:], len(lon_s)] - 1
        gap = np.empty_like(lon_s)
        gap[:-1] = lon_s[1:] - lon_s[:-1]
        gap[end] = lon_s[start] + 360.0 - lon_s[end]
        best = np.lexsort((-gap, idx_s))[start]  # position of each feature's largest gap
        west = np.where(best == end, lon_s[start], lon_s[np.minimum(best + 1, len(lon_s) - 1)])
        feat = idx_s[start]
        out["west"][feat] = west
        out["east"][feat] = west + 360.0 - gap[best]
        out["south"][feat] = np.minimum.reduceat(lat_s, start)
        out["north"][feat] = np.maximum.reduceat(lat_s, start)
    return Extents(**out)


def normalise_lon(geoms: Geoms, centre: NDArray[np.float64]) -> Geoms:
    """Return copies whose longitudes are shifted by whole turns to lie within 180 degrees of ``centre``."""
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    if not len(coords):
        return geoms.copy()
    c = centre[idx]
    coords[:, 0] += 360.0 * np.round((c - coords[:, 0]) / 360.0)
    return shapely.set_coordinates(geoms.copy(), coords)


def choose(ext: Extents, distance_m: float, centroid_lat: NDArray, centroid_lon: NDArray) -> list[LocalCrs]:
    """Choose each feature's local CRS (see the module docstring) for a buffer of ``distance_m``."""
    d_deg = abs(distance_m) / EARTH_RADIUS_M * 180.0 / np.pi
    centre = ext.centre
    zone = (np.floor((centre + 180.0) / 6.0).astype(int) % 60) + 1
    cm = -183.0 + 6.0 * zone
    cm = cm + 360.0 * np.round((centre - cm) / 360.0)
    max_abs_lat = np.maximum(np.abs(ext.south), np.abs(ext.north))
    straddles = (ext.south <= 0) & (ext.north >= 0)
    min_abs_lat = np.where(straddles, 0.0, np.minimum(np.abs(ext.south), np.abs(ext.north)))
    phi = np.radians(np.maximum(min_abs_lat - d_deg, 0.0))
    dlon_buf = d_deg / np.maximum(np.cos(np.radians(np.minimum(max_abs_lat + d_deg, 89.0))), 1e-6)
    dlon = np.maximum(np.abs(ext.west - cm), np.abs(ext.east - cm)) + dlon_buf
    b = np.cos(phi) * np.sin(np.radians(np.minimum(dlon, 89.0)))
    k_far = UTM_K0 / np.sqrt(1.0 - b * b)
    utm = (
        (ext.west >= cm - 3.0)
        & (ext.east <= cm + 3.0)
        & (max_abs_lat + d_deg < UTM_MAX_LAT)
        & (np.abs(k_far - 1.0) <= UTM_MAX_SCALE_ERROR)
    )
    wraps = (ext.east - ext.west) > 180.0
    out: list[LocalCrs] = []
    for i in range(len(centre)):
        if utm[i]:
            out.append(LocalCrs("utm", zone=int(zone[i]), south=bool(centroid_lat[i] < 0)))
        elif wraps[i]:  # around a pole (Antarctica): centre on it
            pole = 90.0 if abs(ext.north[i]) >= abs(ext.south[i]) else -90.0
            out.append(LocalCrs("aeqd", lat_0=pole, lon_0=0.0))
        else:
            lat0 = float(np.clip(centroid_lat[i], -90.0, 90.0))
            out.append(LocalCrs("aeqd", lat_0=round(lat0, 9), lon_0=round(float(wrap_lon(centroid_lon[i])), 9)))
    return out


def check_lonlat_crs(crs: CRS) -> tuple[float, float]:
    """Return the (a, b) ellipsoid axes of a geographic ``crs`` in degrees from Greenwich, or raise."""
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if crs.prime_meridian is None or crs.prime_meridian.longitude != 0 or unit != "degree":
        raise UnknownCRS(
            f"geographic CRS {crs.name!r} must use degrees from Greenwich for metric buffers; "
            "reproject the dataset to EPSG:4326 first",
            field="input",
        )
    ell = crs.ellipsoid
    return float(ell.semi_major_metre), float(ell.semi_minor_metre)


@functools.lru_cache(maxsize=4096)
def transformer(step: str, a: float, b: float) -> Transformer:
    """Return a cached lon/lat (degrees) -> local CRS transformer on the ellipsoid (a, b)."""
    return Transformer.from_pipeline(
        f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step {step} +a={a!r} +b={b!r}"
    )


def project(geoms: Geoms, tr: Transformer, inverse: bool = False) -> Geoms:
    """Return ``geoms`` transformed by ``tr`` (vectorised over all coordinates)."""
    direction = "INVERSE" if inverse else "FORWARD"
    out = shapely.transform(geoms, lambda x, y: tr.transform(x, y, direction=direction), interleaved=False)
    if not inverse and not np.isfinite(shapely.get_coordinates(out)).all():
        raise InvalidGeometry("coordinates outside the valid lon/lat range (|lat| > 90?)", field="input")
    return out


def touches_seam(geoms: Geoms) -> NDArray[np.bool_]:
    """Return which features have a vertex on the antimeridian or at a pole."""
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    hit = (np.abs(coords[:, 0]) >= 180.0) | (np.abs(coords[:, 1]) >= 90.0)
    out = np.zeros(len(geoms), dtype=bool)
    out[idx[hit]] = True
    return out


def close_seams(projected: Geoms, seam: NDArray[np.bool_]) -> Geoms:
    """Snap features that had antimeridian/pole vertices so seams close (see ``SEAM_GRID_M``)."""
    out = projected.copy()
    if seam.any():
        out[seam] = shapely.set_precision(projected[seam], SEAM_GRID_M)
    return out


def to_lonlat(buffered: Geoms, tr: Transformer, centre: NDArray[np.float64]) -> Geoms:
    """Return projected polygons back in lon/lat, valid, split at +-180 and closed around poles."""
    pole_xy = [tr.transform(0.0, lat) for lat in (90.0, -90.0)]
    has_pole = np.zeros(len(buffered), dtype=bool)
    for px, py in pole_xy:
        has_pole |= shapely.contains_xy(buffered, px, py)
    out = normalise_lon(project(buffered, tr, inverse=True), centre)
    for i in np.flatnonzero(has_pole):
        out[i] = _polar_to_lonlat(buffered[i], tr, pole_xy)
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
    out[bad] = _polygonal(merged)
    return out


def _polygonal(geoms: Geoms) -> Geoms:
    """Keep only the polygonal parts (window cuts can leave slivers of lower dimension)."""
    parts, idx = shapely.get_parts(geoms, return_index=True)
    keep = shapely.get_type_id(parts) == 3
    multi = shapely.multipolygons(parts[keep], indices=idx[keep], out=np.empty(len(geoms), dtype=object))
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
    return _polygonal(np.array([merged]))[0]


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


@dataclass(frozen=True)
class LocalResult:
    """Per feature: the result in lon/lat, the strategy ("local-utm"/"local-aeqd") and the scale error."""

    geoms: Geoms
    kinds: NDArray[np.object_]
    scale_error: NDArray[np.float64]


def apply_local(
    geoms: Geoms,
    crs: CRS,
    distance_m: float,
    op: Callable[[Geoms], Geoms],
    ring_op: Callable[[Geoms], Geoms] | None = None,
) -> LocalResult:
    """Apply a planar metric ``op`` (e.g. a buffer by ``distance_m``) to each feature in local CRSs.

    Multi-part features are handled part by part (each part in its own CRS, so France's overseas parts
    do not share one projection) and the part results are unioned in lon/lat; parts that touch across
    the antimeridian are merged first, so a negative buffer does not erode along the +-180 seam.

    Args:
        geoms: features in the geographic ``crs`` (x = lon, y = lat, degrees).
        crs: their geographic CRS; local CRSs use its ellipsoid.
        distance_m: how far ``op`` reaches (metres), for the choice of CRS and the scale error.
        op: vectorised planar operation on projected geometries (metres); it must distribute over
            disjoint parts, as buffers do.
        ring_op: for buffers of polygons, the two-sided buffer of boundary lines by ``|distance_m|``
            (round caps). Given, polygon parts too large for one aeqd (scale error above
            ``SPLIT_SCALE_ERROR``) are buffered as ``P ∪ ring_op(∂P)`` (or ``P − ring_op(∂P)`` for a
            negative distance) with ``∂P`` cut into short pieces, each in its own local CRS.

    Returns:
        Results in lon/lat (valid, split at +-180); null/empty inputs give ``None``. ``kinds`` is the
        strategy of the feature's largest-error part.
    """
    a, b = check_lonlat_crs(crs)
    n = len(geoms)
    out = np.full(n, None, dtype=object)
    kinds = np.full(n, "", dtype=object)
    err = np.full(n, np.nan)
    feat = np.flatnonzero(~(shapely.is_missing(geoms) | shapely.is_empty(geoms)))
    if not len(feat):
        return LocalResult(out, kinds, err)
    parts, owner, seam = _parts(geoms[feat])
    ext = lonlat_extents(parts)
    centre = ext.centre
    # edges are straight in lon/lat (RFC 7946); densified, they stay (nearly) so in the local CRS
    # (features wrapping around a pole keep their raw longitudes: their edges are already short)
    local = ext.east - ext.west <= 180.0
    parts[local] = normalise_lon(parts[local], centre[local])
    parts = shapely.segmentize(parts, MAX_EDGE_DEG)
    cen = shapely.centroid(parts)
    plans = choose(ext, distance_m, shapely.get_y(cen), shapely.get_x(cen))
    res = np.empty(len(parts), dtype=object)
    p_err = np.zeros(len(parts))
    p_kind = np.empty(len(parts), dtype=object)
    groups: dict[LocalCrs, list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault(plan, []).append(i)
    big: list[np.ndarray] = []
    for plan, members in groups.items():
        m = np.asarray(members)
        tr = transformer(plan.proj_step(), a, b)
        proj = close_seams(project(parts[m], tr), seam[m])
        if ring_op is not None and plan.kind == "aeqd":
            bounds, radius = _extent_stats(np.concatenate([proj, proj]), len(m))
            large = (plan.scale_error(bounds, radius + abs(distance_m)) > SPLIT_SCALE_ERROR) & np.isin(
                shapely.get_type_id(parts[m]), (3, 6)
            )
            big.append(m[large])
            m, proj = m[~large], proj[~large]
            if not len(m):
                continue
        buffered = op(proj)
        p_err[m] = plan.scale_error(*_extent_stats(np.concatenate([proj, buffered]), len(m)))
        res[m] = to_lonlat(buffered, tr, centre[m])
        p_kind[m] = f"local-{plan.kind}"
    for i in np.concatenate(big) if big else []:
        res[i], p_err[i], p_kind[i] = _via_boundary(parts[i], crs, distance_m, ring_op)
    _merge_parts(res, p_err, p_kind, owner, feat, out, err, kinds)
    return LocalResult(out, kinds, err)


def _via_boundary(
    poly: shapely.Geometry, crs: CRS, distance_m: float, ring_op: Callable[[Geoms], Geoms] | None
) -> tuple[shapely.Geometry, float, str]:
    """Buffer a large lon/lat polygon as P ∪/− (buffer of its boundary pieces, each in a local CRS)."""
    pieces = np.array(_boundary_pieces(poly), dtype=object)
    ring = apply_local(pieces, crs, abs(distance_m), ring_op or (lambda g: g))
    band = shapely.union_all(ring.geoms[~shapely.is_missing(ring.geoms)])
    base = split_antimeridian(np.array([poly], dtype=object))[0]
    merged = shapely.union(base, band) if distance_m > 0 else shapely.difference(base, band)
    worst = int(np.nanargmax(ring.scale_error)) if len(pieces) else 0
    kind = str(ring.kinds[worst]) if len(pieces) else "local-aeqd"
    return _polygonal(np.array([merged], dtype=object))[0], float(np.nanmax(ring.scale_error, initial=0.0)), kind


def _boundary_pieces(poly: shapely.Geometry) -> list[shapely.LineString]:
    """Return the polygon's rings cut into runs of at most ``PIECE_VERTICES`` vertices.

    Cuts fall at edge midpoints, so every real vertex keeps its join; edges along the antimeridian or a
    pole (seams of the lon/lat representation, not coastline) are left out.
    """
    out = []
    for part in shapely.get_parts(poly):
        for ring in [part.exterior, *part.interiors]:
            xy = np.asarray(ring.coords)[:, :2]
            on_meridian = np.abs(np.abs(xy[:, 0]) - 180.0) < 1e-9  # segmentize may leave 179.99999999999994
            at_pole = np.abs(np.abs(xy[:, 1]) - 90.0) < 1e-9
            seam_edge = (on_meridian[:-1] & on_meridian[1:] & (np.abs(xy[:-1, 0] - xy[1:, 0]) < 1e-9)) | (
                at_pole[:-1] & at_pole[1:]
            )
            if not seam_edge.any():  # closed ring: start the runs at a midpoint
                xy = np.vstack([(xy[0] + xy[1]) / 2, xy[1:], xy[1:2] - (xy[1] - xy[0]) / 2])
                seam_edge = np.zeros(len(xy) - 1, dtype=bool)
            for run in np.split(np.arange(len(xy) - 1), np.flatnonzero(seam_edge)):
                run = run[~seam_edge[run]]
                if len(run):
                    out += _cut(xy[run[0] : run[-1] + 2])
    return out


def _cut(xy: np.ndarray) -> list[shapely.LineString]:
    """Cut an open vertex run into lines of <= ``PIECE_VERTICES`` vertices, split at edge midpoints."""
    lines, start = [], xy[0]
    body = xy[1:-1]
    for k in range(0, max(len(body), 1), PIECE_VERTICES):
        chunk = body[k : k + PIECE_VERTICES]
        nxt = xy[min(k + PIECE_VERTICES + 1, len(xy) - 1)]
        end = (chunk[-1] + nxt) / 2 if k + PIECE_VERTICES < len(body) else xy[-1]
        lines.append(shapely.LineString(np.vstack([start, chunk, end]) if len(chunk) else [start, end]))
        start = end
    return lines


def _parts(geoms: Geoms) -> tuple[Geoms, NDArray[np.intp], NDArray[np.bool_]]:
    """Return the parts of ``geoms`` (seam-adjacent parts merged), each part's owner, and its seam flag."""
    seam = touches_seam(geoms)
    geoms = geoms.copy()
    multi = np.flatnonzero(seam & (shapely.get_num_geometries(geoms) > 1))
    if len(multi):
        ext = lonlat_extents(geoms[multi])
        multi, centre = multi[ext.east - ext.west <= 180.0], ext.centre[ext.east - ext.west <= 180.0]
        norm = normalise_lon(geoms[multi], centre)  # seam vertices become bit-identical
        geoms[multi] = [shapely.union_all(shapely.get_parts(g)) for g in norm]
    parts, owner = shapely.get_parts(geoms, return_index=True)
    return parts, owner, seam[owner]


def _merge_parts(
    res: Geoms,
    p_err: NDArray,
    p_kind: NDArray,
    owner: NDArray,
    feat: NDArray,
    out: Geoms,
    err: NDArray,
    kinds: NDArray,
) -> None:
    """Union part results per feature (in lon/lat) and keep each feature's worst scale error."""
    invalid = ~shapely.is_valid(res)  # reprojection can pinch near-touching rings
    if invalid.any():
        res[invalid] = _polygonal(shapely.make_valid(res[invalid], method="structure"))
    single = np.bincount(owner, minlength=len(feat)) == 1
    first = np.full(len(feat), -1)
    np.maximum.at(first, owner, np.arange(len(owner)))
    out[feat[single]] = res[first[single]]
    for f in np.flatnonzero(~single):
        out[feat[f]] = _polygonal(np.array([shapely.union_all(res[owner == f])]))[0]
    worst = np.lexsort((-p_err, owner))
    starts = np.flatnonzero(np.r_[True, owner[worst][1:] != owner[worst][:-1]])
    err[feat[owner[worst][starts]]] = p_err[worst][starts]
    kinds[feat[owner[worst][starts]]] = p_kind[worst][starts]


def _extent_stats(both: Geoms, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return per-feature bounds and max vertex radius of ``both`` = inputs followed by results (2n)."""
    b = shapely.bounds(both)
    bounds = np.column_stack(
        [
            np.fmin(b[:n, 0], b[n:, 0]),
            np.fmin(b[:n, 1], b[n:, 1]),
            np.fmax(b[:n, 2], b[n:, 2]),
            np.fmax(b[:n, 3], b[n:, 3]),
        ]
    )
    coords, idx = shapely.get_coordinates(both, return_index=True)
    radius = np.zeros(n)
    np.maximum.at(radius, idx % n, np.hypot(coords[:, 0], coords[:, 1]))
    return bounds, radius
