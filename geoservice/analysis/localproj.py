"""Choosing each feature's local projected CRS (its UTM zone or a centred aeqd) and building its transformers.

Each feature gets the UTM zone of its centre when the feature (with the buffer) fits in that zone, keeps
|lat| < 84 and the UTM scale error stays <= ``UTM_MAX_SCALE_ERROR``; otherwise an azimuthal equidistant
projection centred on the feature (on the pole for features that wrap around one). ``choose`` returns the
distinct CRSs of a batch and each feature's index into them, so features sharing a CRS (a UTM zone) are
transformed together: ``project_grouped`` makes one PROJ call per CRS over a single shapely pass. aeqd
transformers are built from PROJ pipeline strings (about 0.1 ms each) and cached. Local CRSs use the input's
own ellipsoid, so going to them and back is a pure projection: no datum shift. Coordinates are x = longitude,
y = latitude in degrees (GeoPandas order, whatever the CRS axis order).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
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
#: Features whose longitudes all lie within this many degrees of their centre need no normalising.
_NEAR_DEG = 179.0

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


@dataclass(frozen=True)
class Plans:
    """The local CRSs of a batch of features: feature ``i`` works in ``crs[index[i]]``."""

    crs: tuple[LocalCrs, ...]
    index: NDArray[np.intp]


def scale_error(utm: NDArray[np.bool_], proj_bounds: NDArray[np.float64], max_radius: NDArray[np.float64]) -> NDArray:
    """Return the largest |scale - 1| over each feature's projected extent (spherical formulas).

    Args:
        utm: (n,) whether the feature is in a UTM zone (else in an aeqd centred near it).
        proj_bounds: (n, 4) bounds in the local CRS (metres), of the input and the result together.
        max_radius: (n,) largest distance (metres) of any vertex from the aeqd origin (unused for UTM).
    """
    out = np.empty(len(utm))
    if utm.any():
        b = proj_bounds[utm]
        off = np.abs(b[:, [0, 2]] - 500_000.0)
        near = np.where((b[:, 0] <= 5e5) & (b[:, 2] >= 5e5), 0.0, off.min(axis=1))
        k = UTM_K0 * np.cosh(np.stack([near, off.max(axis=1)]) / (UTM_K0 * EARTH_RADIUS_M))
        out[utm] = np.abs(k - 1.0).max(axis=0)
    if not utm.all():  # aeqd: distances from the centre are true, across them the scale is rho / sin(rho)
        rho = np.minimum(max_radius[~utm] / EARTH_RADIUS_M, np.pi)
        err = np.zeros(len(rho))
        far = rho > 1e-12
        err[far] = rho[far] / np.sin(rho[far]) - 1.0
        out[~utm] = err
    return out


def wrap_lon(lon: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return longitudes wrapped into [-180, 180)."""
    return (np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0


def coord_bounds(geoms: Geoms) -> NDArray[np.float64]:
    """Return (n, 4) minx, miny, maxx, maxy over all vertices of each geometry (holes too; NaN if empty).

    GEOS envelopes are exact for points, lines and polygons without holes (a polygon's is its shell's);
    multi-part geometries and polygons with holes (invalid ones may have holes outside) go by vertices.
    """
    out = shapely.bounds(geoms)
    slow = (shapely.get_type_id(geoms) > 3) | (shapely.get_num_interior_rings(geoms) > 0)
    if slow.any():
        count = shapely.get_num_coordinates(geoms[slow])
        has = count > 0
        if has.any():
            xy = shapely.get_coordinates(geoms[slow])
            start = (np.cumsum(count) - count)[has]
            lo, hi = np.minimum.reduceat(xy, start), np.maximum.reduceat(xy, start)
            out[np.flatnonzero(slow)[has]] = np.column_stack([lo, hi])
    return out


def lonlat_extents(geoms: Geoms, bounds: NDArray[np.float64] | None = None) -> Extents:
    """Return each feature's extent, taking the antimeridian into account (empty features give NaN).

    The longitude interval is the complement of the largest gap between the feature's vertex longitudes
    around the circle, so a feature split at +-180 (Fiji, Chukotka) gets e.g. west=177, east=182. Features
    within [-180, 180) and narrower than 179 degrees take it from their ``bounds`` (``coord_bounds``).
    """
    b = coord_bounds(geoms) if bounds is None else bounds
    hard = (b[:, 0] < -180.0) | (b[:, 2] >= 180.0) | (b[:, 2] - b[:, 0] >= _NEAR_DEG)  # NaN (empty): False
    if hard.all():
        return _gap_extents(geoms)
    west = wrap_lon(b[:, 0])
    east = west + 360.0 - (west + 360.0 - wrap_lon(b[:, 2]))  # as the gap formula below, bit for bit
    out = Extents(west, east, b[:, 1].copy(), b[:, 3].copy())
    if hard.any():
        sub = _gap_extents(geoms[hard])
        for name in ("west", "east", "south", "north"):
            getattr(out, name)[hard] = getattr(sub, name)
    return out


def _gap_extents(geoms: Geoms) -> Extents:
    """``lonlat_extents`` for any features, from the largest gap between their sorted vertex longitudes."""
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


def normalise_lon(geoms: Geoms, centre: NDArray[np.float64], bounds: NDArray[np.float64] | None = None) -> Geoms:
    """Return copies whose longitudes are shifted by whole turns to lie within 180 degrees of ``centre``.

    Given their ``bounds``, features already within 179 degrees of their centre are kept as they are
    (shifting them would change nothing).
    """
    todo = None if bounds is None else (bounds[:, 2] - centre >= _NEAR_DEG) | (centre - bounds[:, 0] >= _NEAR_DEG)
    if todo is None or todo.all():
        sel, c = geoms, centre
    elif not todo.any():
        return geoms.copy()
    else:
        sel, c = geoms[todo], centre[todo]
    coords, idx = shapely.get_coordinates(sel, return_index=True)
    coords[:, 0] += 360.0 * np.round((c[idx] - coords[:, 0]) / 360.0)
    shifted = shapely.set_coordinates(sel.copy(), coords)
    if sel is geoms:
        return shifted
    out = geoms.copy()
    out[todo] = shifted
    return out


def _utm_fit(ext: Extents, distance_m: float) -> tuple[NDArray[np.bool_], NDArray[np.int_]]:
    """Return which features fit their centre's UTM zone (with the buffer, within the error), and the zone."""
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
    return utm, zone


def choose(ext: Extents, distance_m: float, geoms: Geoms) -> Plans:
    """Choose each feature's local CRS (see the module docstring) for a buffer of ``distance_m``.

    A UTM feature is in the southern zone when its centroid is south of the equator (computed only for
    features that straddle it); an aeqd is centred on the feature's centroid (on the pole when it wraps).
    """
    utm, zone = _utm_fit(ext, distance_m)
    south = ext.north < 0
    need = ~utm | ((ext.south <= 0) & ~south)  # aeqd, or UTM across the equator
    lat = lon = np.zeros(len(utm))
    if need.any():
        cen = shapely.centroid(geoms[need])
        lat, lon = lat.copy(), lon.copy()
        lat[need], lon[need] = shapely.get_y(cen), shapely.get_x(cen)
        south = np.where(need, lat < 0, south)
    code = 2 * zone + south
    if len(code) and utm.all() and (code[0] == code).all():  # the common case: everything in one UTM zone
        z = int(code[0])
        return Plans((LocalCrs("utm", zone=z // 2, south=bool(z % 2)),), np.zeros(len(code), dtype=np.intp))
    code[~utm] = -1
    crs = {LocalCrs("utm", zone=z // 2, south=bool(z % 2)): z for z in sorted(set(code[utm].tolist()))}
    _add_aeqd(crs, code, np.flatnonzero(~utm), ext, np.clip(lat, -90.0, 90.0), wrap_lon(lon))
    by_code = sorted((v, k) for k, v in crs.items())  # UTM zones first, then aeqds in order of appearance
    codes = np.array([v for v, _ in by_code])
    return Plans(tuple(k for _, k in by_code), np.searchsorted(codes, code))


def _add_aeqd(
    crs: dict[LocalCrs, int], code: NDArray, which: NDArray, ext: Extents, lat: NDArray, lon: NDArray
) -> None:
    """Give features ``which`` an aeqd on their centroid (``lat``, ``lon``), or on the pole they wrap around."""
    for i in which.tolist():  # one aeqd per centre (features with the same centre share it)
        if ext.east[i] - ext.west[i] > 180.0:  # around a pole (Antarctica): centre on it
            pole = 90.0 if abs(ext.north[i]) >= abs(ext.south[i]) else -90.0
            key = LocalCrs("aeqd", lat_0=pole, lon_0=0.0)
        else:
            key = LocalCrs("aeqd", lat_0=round(float(lat[i]), 9), lon_0=round(float(lon[i]), 9))
        code[i] = crs.setdefault(key, 1000 + len(crs))


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
    return project_grouped(geoms, np.zeros(len(geoms), dtype=np.intp), [tr], inverse)


def project_grouped(
    geoms: Geoms, index: NDArray[np.intp], transformers: Sequence[Transformer], inverse: bool = False
) -> Geoms:
    """Return ``geoms[i]`` transformed by ``transformers[index[i]]``: one shapely pass, one PROJ call per run
    of equal ``index`` values (sort the features by ``index`` first for one call per transformer).

    Forward (lon/lat -> metres), non-finite results raise ``InvalidGeometry`` (|lat| > 90?).
    """
    if not len(geoms):
        return geoms.copy()
    direction = "INVERSE" if inverse else "FORWARD"
    if index[0] == index[-1] and (len(index) < 3 or (index == index[0]).all()):  # one transformer
        tr = transformers[index[0]]

        def one(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
            x, y = tr.transform(x, y, direction=direction)
            if not inverse and not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise InvalidGeometry("coordinates outside the valid lon/lat range (|lat| > 90?)", field="input")
            return x, y

        return shapely.transform(geoms, one, interleaved=False)
    cut = np.concatenate([[0], np.flatnonzero(index[1:] != index[:-1]) + 1, [len(index)]])
    ends = np.concatenate([[0], np.cumsum(shapely.get_num_coordinates(geoms))])[cut]

    def apply(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.empty_like(xy)
        for k, s, e in zip(index[cut[:-1]], ends[:-1], ends[1:], strict=True):
            out[s:e, 0], out[s:e, 1] = transformers[k].transform(xy[s:e, 0], xy[s:e, 1], direction=direction)
        if not inverse and not np.isfinite(out).all():
            raise InvalidGeometry("coordinates outside the valid lon/lat range (|lat| > 90?)", field="input")
        return out

    return shapely.transform(geoms, apply)
