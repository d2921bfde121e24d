"""Synthetic data of the performance baseline (seed 20240601), as GeoDataFrames in EPSG:4326.

Region: a 100 x 100 km square in UTM 50N (EPSG:32650) centred on Beijing; everything is generated in
UTM metres and stored in EPSG:4326. Polygons are star-shaped around their centre (vertices at evenly
spaced angles, so always valid) with 32-64 vertices (49 coordinates on average with the closing one),
a per-polygon radius uniform in [0.5, 1.5] x the mean radius, and +-10 % radial jitter per vertex.
Points are uniform. Every layer has one integer attribute ``id``.

The overlay radius scales with N so that a polygon meets about 2.2 polygons of the other layer of the
same size, at any N (calibrated: about 2.2 intersecting pairs per feature at N = 5k and 50k).
"""

from __future__ import annotations

import numpy as np
import shapely
from geopandas import GeoDataFrame
from pyproj import Transformer

SEED = 20240601
UTM = 32650
REGION_M = 100_000.0
CENTRE_LONLAT = (116.4, 39.9)  # Beijing
#: One random stream per layer, so each layer is the same whatever else a run generates.
STREAMS = {"io": 1, "points": 2, "buffer": 3, "overlay_a": 4, "overlay_b": 5, "warmup": 6, "small": 7}
BUFFER_MEAN_RADIUS_M = 500.0
#: Expected intersecting pairs per feature ~ N * pi * E[(ra + rb)^2] / area, with E[(ra+rb)^2] = 4 r^2 (1 + 1/24).
PAIRS_CONSTANT = 2.1

_to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
_to_lonlat = Transformer.from_crs(UTM, 4326, always_xy=True)


def rng(stream: str) -> np.random.Generator:
    return np.random.default_rng([SEED, STREAMS[stream]])


def region_bounds() -> tuple[float, float, float, float]:
    """Return (minx, miny, maxx, maxy) of the region in UTM 50N metres."""
    cx, cy = _to_utm.transform(*CENTRE_LONLAT)
    half = REGION_M / 2
    return cx - half, cy - half, cx + half, cy + half


def overlay_radius(n: int) -> float:
    """Mean polygon radius (m) at which each of n polygons meets about 2 polygons of another such layer."""
    return float(REGION_M * np.sqrt(PAIRS_CONSTANT / (4 * np.pi * n * (1 + 1 / 24))))


def star_polygons_utm(gen: np.random.Generator, n: int, mean_radius: float) -> np.ndarray:
    """Return n star-shaped polygons in UTM 50N coordinates (vectorised: one linearrings call)."""
    minx, miny, maxx, maxy = region_bounds()
    nv = gen.integers(32, 65, n)
    total = int(nv.sum())
    owner = np.repeat(np.arange(n), nv)
    k = np.arange(total) - np.repeat(np.cumsum(nv) - nv, nv)
    angle = gen.uniform(0, 2 * np.pi, n)[owner] + 2 * np.pi * k / nv[owner]
    radius = (mean_radius * gen.uniform(0.5, 1.5, n))[owner] * (1 + gen.uniform(-0.1, 0.1, total))
    cx, cy = gen.uniform(minx, maxx, n), gen.uniform(miny, maxy, n)
    xy = np.column_stack([cx[owner] + radius * np.cos(angle), cy[owner] + radius * np.sin(angle)])
    return shapely.polygons(shapely.linearrings(xy, indices=owner))


def _lonlat(geoms: np.ndarray) -> np.ndarray:
    return shapely.transform(geoms, lambda xy: np.column_stack(_to_lonlat.transform(xy[:, 0], xy[:, 1])))


def polygons(stream: str, n: int, mean_radius: float) -> GeoDataFrame:
    """A layer of n star polygons in EPSG:4326 with an ``id`` attribute."""
    geoms = _lonlat(star_polygons_utm(rng(stream), n, mean_radius))
    return GeoDataFrame({"id": np.arange(1, n + 1)}, geometry=geoms, crs=4326)


def points(stream: str, n: int) -> GeoDataFrame:
    """A layer of n uniform points in EPSG:4326 with an ``id`` attribute."""
    gen = rng(stream)
    minx, miny, maxx, maxy = region_bounds()
    lon, lat = _to_lonlat.transform(gen.uniform(minx, maxx, n), gen.uniform(miny, maxy, n))
    return GeoDataFrame({"id": np.arange(1, n + 1)}, geometry=shapely.points(lon, lat), crs=4326)
