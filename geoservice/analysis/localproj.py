"""Choosing each feature's local projected CRS (its UTM zone or a centred aeqd) and building its transformers.

Each feature gets the UTM zone of its centre when the feature (with the buffer) fits in that zone, keeps
|lat| < 84 and the UTM scale error stays <= ``UTM_MAX_SCALE_ERROR``; otherwise an azimuthal equidistant
projection centred on the feature (on the pole for features that wrap around one). aeqd transformers are
built from PROJ pipeline strings (about 0.1 ms each) and cached. Local CRSs use the input's own ellipsoid,
so going to them and back is a pure projection: no datum shift. Coordinates are x = longitude, y = latitude
in degrees (GeoPandas order, whatever the CRS axis order).
"""

from __future__ import annotations

import functools
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
