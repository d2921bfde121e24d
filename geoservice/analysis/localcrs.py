"""Per-feature local projected CRSs for metric work on geographic (lon/lat) data: ``apply_local``.

Each feature (part) is projected to its own local CRS (``localproj``: its UTM zone, or an azimuthal
equidistant centred on it), worked on there and brought back to lon/lat (``antimeridian``: split at +-180,
closed around poles). The work is vectorised over the whole batch: parts are sorted by local CRS so each
CRS costs one PROJ call each way (data in one UTM zone costs what a single ``to_crs`` to that zone does),
``op`` is called once and scale errors are array operations. Pole checks only run for parts in an aeqd
(a UTM part never reaches a pole); longitude shifts, seam snapping and splitting only for parts near +-180.

Multi-part features go part by part. A polygon part too large for any single projection (Russia,
Canada, Antarctica: an aeqd over them would be off by up to 8%) is buffered through its boundary, cut into
short pieces that each get their own local CRS, so the scale error stays <= ~1e-3 everywhere.

``split_antimeridian`` is re-exported for callers that buffer in degrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer

from geoservice.analysis.antimeridian import (
    close_seams,
    on_seam,
    pole_points,
    polygonal,
    split_antimeridian,
    to_lonlat,
)
from geoservice.analysis.localproj import (
    Geoms,
    LocalCrs,
    check_lonlat_crs,
    choose,
    coord_bounds,
    lonlat_extents,
    normalise_lon,
    project_grouped,
    scale_error,
    transformer,
)

__all__ = ["LocalResult", "apply_local", "split_antimeridian"]

#: Input edges are split to at most this length (degrees) before projecting.
MAX_EDGE_DEG = 0.05
#: Polygon parts whose single aeqd would exceed this scale error are buffered through their boundary,
#: cut into pieces of at most ``PIECE_VERTICES`` vertices (each piece then fits a UTM zone or small aeqd).
SPLIT_SCALE_ERROR = 1.0e-3
PIECE_VERTICES = 100


@dataclass(frozen=True)
class LocalResult:
    """Per feature: the result in lon/lat, the strategy ("local-utm"/"local-aeqd") and the scale error."""

    geoms: Geoms
    kinds: NDArray[np.object_]
    scale_error: NDArray[np.float64]


@dataclass(frozen=True)
class _Batch:
    """Feature parts ready to project, sorted by local CRS: part ``i`` is in ``crs[index[i]]``.

    ``order[i]`` is part i's position in ``get_parts`` order (``slice(None)``: already in that order, one
    CRS); ``owner`` is its feature, ``seam`` whether that touches the antimeridian or a pole, ``centre`` the
    part's centre longitude.
    """

    parts: Geoms
    owner: NDArray[np.intp]
    seam: NDArray[np.bool_]
    centre: NDArray[np.float64]
    index: NDArray[np.intp]
    crs: tuple[LocalCrs, ...]
    transformers: list[Transformer]
    order: NDArray[np.intp] | slice


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
    the antimeridian are merged first, so a negative buffer does not erode along the +-180 seam. Parts
    sharing a CRS (a UTM zone) go through PROJ together, and ``op`` is called once for all parts.

    Args:
        geoms: features in the geographic ``crs`` (x = lon, y = lat, degrees).
        crs: their geographic CRS; local CRSs use its ellipsoid.
        distance_m: how far ``op`` reaches (metres), for the choice of CRS and the scale error.
        op: vectorised planar operation on projected geometries (metres); it must work geometry by
            geometry and distribute over disjoint parts, as buffers do.
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
    batch = _prepare(geoms[feat], distance_m, a, b)
    res, p_err, p_kind = _compute(batch, crs, distance_m, op, ring_op)
    # back to get_parts order: owners contiguous, parts in input order
    back = np.argsort(batch.order) if isinstance(batch.order, np.ndarray) else batch.order
    _merge_parts(res[back], p_err[back], p_kind[back], batch.owner[back], feat, out, err, kinds)
    return LocalResult(out, kinds, err)


def _prepare(geoms: Geoms, distance_m: float, a: float, b: float) -> _Batch:
    """Split features into parts, bring each near its centre longitude, densify, choose and sort by CRS."""
    parts, owner, seam, bounds = _parts(geoms)
    ext = lonlat_extents(parts, bounds)
    centre = ext.centre
    # edges are straight in lon/lat (RFC 7946); densified, they stay (nearly) so in the local CRS
    # (features wrapping around a pole keep their raw longitudes: their edges are already short)
    local = ext.east - ext.west <= 180.0
    if local.all():
        parts = normalise_lon(parts, centre, bounds)
    else:
        parts[local] = normalise_lon(parts[local], centre[local], bounds[local])
    # a part whose whole extent is shorter than an edge limit has no edge to split (nor was it shifted)
    long = ~(np.hypot(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) <= 0.999 * MAX_EDGE_DEG)
    if long.any():
        parts[long] = shapely.segmentize(parts[long], MAX_EDGE_DEG)
    plans = choose(ext, distance_m, parts)
    trs = [transformer(c.proj_step(), a, b) for c in plans.crs]
    if len(trs) == 1:
        return _Batch(parts, owner, seam, centre, plans.index, plans.crs, trs, slice(None))
    order = np.argsort(plans.index, kind="stable")
    return _Batch(parts[order], owner[order], seam[order], centre[order], plans.index[order], plans.crs, trs, order)


def _compute(
    batch: _Batch, crs: CRS, distance_m: float, op: Callable[[Geoms], Geoms], ring_op: Callable[[Geoms], Geoms] | None
) -> tuple[Geoms, NDArray[np.float64], NDArray[np.object_]]:
    """Return each part's result in lon/lat, scale error and strategy (in the batch's order)."""
    parts, index, trs = batch.parts, batch.index, batch.transformers
    aeqd_crs = np.array([c.kind == "aeqd" for c in batch.crs], dtype=bool)
    utm = ~aeqd_crs[index]
    proj = close_seams(project_grouped(parts, index, trs), batch.seam)
    big = np.zeros(len(parts), dtype=bool)
    if ring_op is not None and aeqd_crs.any():  # polygons too large for one aeqd go through their boundary
        kind = shapely.get_type_id(parts)
        cand = np.flatnonzero(~utm & ((kind == 3) | (kind == 6)))
        radius = _max_radius(proj[cand]) + abs(distance_m)
        big[cand] = scale_error(np.zeros(len(cand), dtype=bool), np.zeros((len(cand), 4)), radius) > SPLIT_SCALE_ERROR
    keep = np.flatnonzero(~big) if big.any() else slice(None)
    buffered = op(proj[keep])
    p_err = np.zeros(len(parts))
    p_err[keep] = _scale_errors(utm[keep], proj[keep], buffered)
    res = np.empty(len(parts), dtype=object)
    res[keep] = to_lonlat(buffered, index[keep], trs, pole_points(trs, aeqd_crs), batch.centre[keep])
    p_kind = np.where(utm, "local-utm", "local-aeqd").astype(object)
    for i in np.flatnonzero(big):
        res[i], p_err[i], p_kind[i] = _via_boundary(parts[i], crs, distance_m, ring_op)
    return res, p_err, p_kind


def _scale_errors(utm: NDArray[np.bool_], proj: Geoms, result: Geoms) -> NDArray[np.float64]:
    """Return the scale error over each part's projected input and result together."""
    n = len(proj)
    b = shapely.bounds(np.concatenate([proj, result]))
    bounds = np.column_stack([np.fmin(b[:n, :2], b[n:, :2]), np.fmax(b[:n, 2:], b[n:, 2:])])
    radius = np.zeros(n)
    if not utm.all():  # an aeqd's error grows with the distance from its centre
        r = _max_radius(np.concatenate([proj[~utm], result[~utm]]))
        radius[~utm] = np.maximum(r[: len(r) // 2], r[len(r) // 2 :])
    return scale_error(utm, bounds, radius)


def _max_radius(geoms: Geoms) -> NDArray[np.float64]:
    """Return each geometry's largest vertex distance from the origin (0 for empty ones)."""
    xy, idx = shapely.get_coordinates(geoms, return_index=True)
    out = np.zeros(len(geoms))
    np.maximum.at(out, idx, np.hypot(xy[:, 0], xy[:, 1]))
    return out


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
    return polygonal(np.array([merged], dtype=object))[0], float(np.nanmax(ring.scale_error, initial=0.0)), kind


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


def _parts(geoms: Geoms) -> tuple[Geoms, NDArray[np.intp], NDArray[np.bool_], NDArray[np.float64]]:
    """Return the parts of ``geoms`` (seam-adjacent parts merged), each part's owner, its feature's seam
    flag (a vertex on the antimeridian or a pole) and the part's ``coord_bounds``."""
    parts, owner = shapely.get_parts(geoms, return_index=True)
    bounds = coord_bounds(parts)
    seam = np.zeros(len(geoms), dtype=bool)
    seam[owner[on_seam(bounds)]] = True
    count = np.bincount(owner, minlength=len(geoms))
    multi = np.flatnonzero(seam & (count > 1))
    if not len(multi):
        return parts, owner, seam[owner], bounds
    geoms = geoms.copy()
    fb = None
    if count.all():  # each feature's parts are one run: its bounds are theirs
        start = np.cumsum(count) - count
        fb = np.column_stack([np.fmin.reduceat(bounds[:, :2], start), np.fmax.reduceat(bounds[:, 2:], start)])[multi]
    ext = lonlat_extents(geoms[multi], fb)
    ok = ext.east - ext.west <= 180.0
    norm = normalise_lon(geoms[multi[ok]], ext.centre[ok])  # seam vertices become bit-identical
    geoms[multi[ok]] = [shapely.union_all(shapely.get_parts(g)) for g in norm]
    parts, owner = shapely.get_parts(geoms, return_index=True)
    return parts, owner, seam[owner], coord_bounds(parts)


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
    """Union part results per feature (in lon/lat) and keep each feature's worst scale error.

    ``owner`` must be non-decreasing (``get_parts`` order): each feature's parts are contiguous.
    """
    invalid = ~shapely.is_valid(res)  # reprojection can pinch near-touching rings
    if invalid.any():
        res[invalid] = polygonal(shapely.make_valid(res[invalid], method="structure"))
    if len(owner) == len(feat):  # one part per feature
        out[feat], err[feat], kinds[feat] = res, p_err, p_kind
        return
    count = np.bincount(owner, minlength=len(feat))
    start = np.r_[0, np.cumsum(count)[:-1]]
    single = count == 1
    out[feat[single]] = res[start[single]]
    multi = np.flatnonzero(count > 1)
    if len(multi):  # one row per feature, padded with None (ignored by union_all)
        rows = np.repeat(np.arange(len(multi)), count[multi])
        cols = np.arange(len(rows)) - np.repeat(np.cumsum(count[multi]) - count[multi], count[multi])
        grid = np.full((len(multi), int(count[multi].max())), None, dtype=object)
        grid[rows, cols] = res[np.repeat(start[multi], count[multi]) + cols]
        out[feat[multi]] = polygonal(shapely.union_all(grid, axis=1))
    worst = np.lexsort((-p_err, owner))
    starts = np.flatnonzero(np.r_[True, owner[worst][1:] != owner[worst][:-1]])
    err[feat[owner[worst][starts]]] = p_err[worst][starts]
    kinds[feat[owner[worst][starts]]] = p_kind[worst][starts]
