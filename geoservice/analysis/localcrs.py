"""Per-feature local projected CRSs for metric work on geographic (lon/lat) data: ``apply_local``.

Each feature (part) is projected to its own local CRS (``localproj``: its UTM zone, or an azimuthal
equidistant centred on it), worked on there and brought back to lon/lat (``antimeridian``: split at +-180,
closed around poles). Features that share a UTM zone are transformed together (vectorised).

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
from pyproj import CRS

from geoservice.analysis.antimeridian import close_seams, polygonal, split_antimeridian, to_lonlat, touches_seam
from geoservice.analysis.localproj import (
    Geoms,
    LocalCrs,
    check_lonlat_crs,
    choose,
    lonlat_extents,
    normalise_lon,
    project,
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
        res[invalid] = polygonal(shapely.make_valid(res[invalid], method="structure"))
    single = np.bincount(owner, minlength=len(feat)) == 1
    first = np.full(len(feat), -1)
    np.maximum.at(first, owner, np.arange(len(owner)))
    out[feat[single]] = res[first[single]]
    for f in np.flatnonzero(~single):
        out[feat[f]] = polygonal(np.array([shapely.union_all(res[owner == f])]))[0]
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
