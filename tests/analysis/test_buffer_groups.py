"""The grouped local-CRS buffer of lon/lat data against independent references.

* one UTM zone (and several, interleaved): the same as pyproj ``from_crs(4326, EPSG:326zz)`` -> GEOS buffer ->
  back, feature for feature, within 1e-9 degrees;
* grouping is invisible: a batch gives bit for bit what each feature gives alone (antimeridian, poles,
  large features, parts in different zones);
* point buffers are rings at the right geodesic distance (``pyproj.Geod.inv``) within the scale error
  recorded for the feature, at every latitude, at zone edges, across the antimeridian and around the poles.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from geopandas import GeoDataFrame
from pyproj import CRS, Geod, Transformer

from geoservice.analysis import localcrs
from geoservice.analysis.buffer import BufferParams, buffer, buffer_planar
from geoservice.analysis.localproj import (
    _gap_extents,
    choose,
    lonlat_extents,
    normalise_lon,
    project,
    project_grouped,
    transformer,
)

GEOD = Geod(ellps="WGS84")
WGS84 = CRS.from_epsg(4326)


def stars(gen: np.random.Generator, lon: np.ndarray, lat: np.ndarray, radius_m: float) -> list[shapely.Polygon]:
    """Star polygons (32-64 vertices, radius 0.5-1.5 x ``radius_m``) drawn geodesically around each centre."""
    out = []
    for x, y in zip(lon, lat, strict=True):
        nv = int(gen.integers(32, 65))
        az = gen.uniform(0, 360) + 360.0 * np.arange(nv) / nv
        dist = radius_m * gen.uniform(0.5, 1.5) * (1 + gen.uniform(-0.1, 0.1, nv))
        vx, vy, _ = GEOD.fwd(np.full(nv, x), np.full(nv, y), az, dist)
        out.append(shapely.Polygon(np.column_stack([vx, vy])[::-1]))
    return out


def layer(geoms: list) -> GeoDataFrame:
    return GeoDataFrame({"id": np.arange(len(geoms))}, geometry=geoms, crs=4326)


def params(distance_m: float, **kw: object) -> BufferParams:
    return BufferParams.model_validate({"distance": {"value": distance_m, "unit": "m"}, **kw})


def utm_reference(geoms: list, epsg: int, distance_m: float, **style: object) -> np.ndarray:
    """Buffer through EPSG ``epsg`` with pyproj and shapely directly (the raw single-zone path)."""
    fwd = Transformer.from_crs(4326, epsg, always_xy=True)
    inv = Transformer.from_crs(epsg, 4326, always_xy=True)
    proj = shapely.transform(np.array(geoms, dtype=object), lambda x, y: fwd.transform(x, y), interleaved=False)
    buffered = shapely.buffer(proj, distance_m, **style)
    return shapely.transform(buffered, lambda x, y: inv.transform(x, y), interleaved=False)


def beijing(n: int, seed: int = 1) -> list:
    """Stars, points and short lines in a 100 km square around Beijing (UTM zone 50N)."""
    gen = np.random.default_rng(seed)
    lon, lat = gen.uniform(115.9, 116.9, n), gen.uniform(39.45, 40.35, n)
    geoms = stars(gen, lon[: n // 2], lat[: n // 2], 500.0)
    geoms += list(shapely.points(lon[n // 2 : 3 * n // 4], lat[n // 2 : 3 * n // 4]))
    geoms += [shapely.LineString([(x, y), (x + 0.01, y + 0.004), (x + 0.02, y)]) for x, y in
              zip(lon[3 * n // 4 :], lat[3 * n // 4 :], strict=True)]
    return geoms


# --- one zone, several zones: the raw single-zone path as reference -----------------------------------------


@pytest.mark.parametrize(
    ("distance", "style"),
    [(100.0, {}), (-60.0, {}), (250.0, {"quad_segs": 3, "join_style": "mitre"}), (40.0, {"cap_style": "flat"})],
)
def test_one_zone_equals_direct_utm_buffer(distance: float, style: dict) -> None:
    geoms = beijing(400)
    out = buffer(layer(geoms), params(distance, **style))
    assert out.metadata["strategy_counts"] == {"local-utm": len(out.gdf)}
    ref = utm_reference(geoms, 32650, distance, **{"quad_segs": 8, **style})
    keep = ~shapely.is_empty(ref)
    assert out.metadata["dropped_empty"] == int((~keep).sum())
    got = np.asarray(out.gdf.geometry.values)
    assert shapely.equals_exact(got, ref[keep], tolerance=1e-9).all()


def test_one_zone_batch_uses_one_crs() -> None:
    parts = np.array(beijing(200), dtype=object)
    ext = lonlat_extents(parts)
    plans = choose(ext, 100.0, parts)
    assert len(plans.crs) == 1 and plans.crs[0].proj_step() == "+proj=utm +zone=50"
    assert (plans.index == 0).all()


def test_interleaved_zones_each_match_their_own_zone() -> None:
    """Features of 12 zones/hemispheres, shuffled: each result is its own zone's reference, in its own row."""
    gen = np.random.default_rng(2)
    zones = np.repeat(np.arange(31, 37), 40)
    lat = np.repeat([[45.0, -10.0]], 120, axis=0).ravel() + gen.uniform(-1, 1, 240)
    lon = -183.0 + 6.0 * zones + gen.uniform(-2, 2, 240)
    order = gen.permutation(240)
    geoms = stars(gen, lon[order], lat[order], 800.0)
    out = buffer(layer(geoms), params(150.0))
    assert out.metadata["strategy_counts"] == {"local-utm": 240}
    got = np.asarray(out.gdf.geometry.values)
    for zone in range(31, 37):
        for south in (False, True):
            mine = (zones[order] == zone) & ((lat[order] < 0) == south)
            ref = utm_reference([geoms[i] for i in np.flatnonzero(mine)], (32700 if south else 32600) + zone, 150.0,
                                quad_segs=8)
            assert shapely.equals_exact(got[mine], ref, tolerance=1e-9).all(), (zone, south)


def test_multipart_feature_with_parts_in_two_zones() -> None:
    mp = shapely.MultiPoint([(9.0, 50.0), (15.0, 50.0)])  # zones 32 and 33
    out = buffer(layer([mp]), params(1000.0)).gdf.geometry.iloc[0]
    ref = shapely.union_all([utm_reference([shapely.Point(9.0, 50.0)], 32632, 1000.0)[0],
                             utm_reference([shapely.Point(15.0, 50.0)], 32633, 1000.0)[0]])
    assert out.geom_type == "MultiPolygon"
    assert shapely.equals_exact(shapely.normalize(out), shapely.normalize(ref), tolerance=1e-9)


# --- grouping is invisible ----------------------------------------------------------------------------------


def mixed_world(seed: int = 3) -> np.ndarray:
    """Small and large stars everywhere, split at +-180, near the poles, points at the poles, multi-zone parts."""
    gen = np.random.default_rng(seed)
    geoms = stars(gen, gen.uniform(-180, 180, 40), np.degrees(np.arcsin(gen.uniform(-0.99, 0.99, 40))), 500.0)
    geoms += stars(gen, gen.uniform(-180, 180, 10), gen.uniform(-70, 70, 10), 150_000.0)
    geoms += stars(gen, gen.uniform(-180, 180, 10), gen.choice([-1, 1], 10) * gen.uniform(84, 89.9, 10), 500.0)
    around = stars(gen, 180.0 + gen.uniform(-0.005, 0.005, 10), gen.uniform(-60, 60, 10), 700.0)
    geoms += list(localcrs.split_antimeridian(np.array(around, dtype=object)))
    geoms += [shapely.Point(0.0, 90.0), shapely.Point(123.0, -89.9999), shapely.Point(180.0, 0.0)]
    geoms += [shapely.MultiPoint([(2.999, 10.0), (3.001, 10.0), (-179.999, -5.0)]), None, shapely.Polygon()]
    return np.array(geoms, dtype=object)


@pytest.mark.parametrize("distance", [100.0, -200.0, 25_000.0])
def test_batch_equals_feature_by_feature(distance: float) -> None:
    geoms = mixed_world()
    op = lambda g: buffer_planar(g, distance)  # noqa: E731
    ring = lambda g: buffer_planar(g, abs(distance))  # noqa: E731
    batch = localcrs.apply_local(geoms, WGS84, distance, op, ring)
    assert {"local-utm", "local-aeqd"} <= set(batch.kinds)
    for i, g in enumerate(geoms):
        alone = localcrs.apply_local(np.array([g], dtype=object), WGS84, distance, op, ring)
        if batch.geoms[i] is None:
            assert alone.geoms[0] is None
            continue
        assert shapely.equals_exact(batch.geoms[i], alone.geoms[0], tolerance=0), i
        assert (batch.kinds[i], batch.scale_error[i]) == (alone.kinds[0], alone.scale_error[0]), i


def test_project_grouped_equals_one_transformer_at_a_time() -> None:
    a, b = 6378137.0, 6356752.314245179
    steps = ["+proj=utm +zone=50", "+proj=aeqd +lat_0=89.5 +lon_0=10.0", "+proj=utm +zone=1 +south"]
    trs = [transformer(s, a, b) for s in steps]
    gen = np.random.default_rng(4)
    index = gen.integers(0, 3, 60)
    centres = np.array([[117.0, 40.0], [10.0, 89.5], [-177.0, -30.0]])[index]
    geoms = np.array(stars(gen, centres[:, 0], centres[:, 1], 2_000.0), dtype=object)
    for inverse in (False, True):
        src = geoms if not inverse else project_grouped(geoms, index, trs)
        got = project_grouped(src, index, trs, inverse=inverse)  # unsorted index: one call per run
        for k in range(3):
            ref = project(src[index == k], trs[k], inverse=inverse)
            assert shapely.equals_exact(got[index == k], ref, tolerance=0).all()


def test_extents_shortcut_equals_largest_gap() -> None:
    geoms = np.array(
        [
            shapely.box(116.0, 39.0, 116.1, 39.1),
            shapely.box(-180.0, -10.0, -179.0, -9.0),  # touches -180: the gap path
            shapely.LineString([(179.5, 0.0), (-179.5, 1.0)]),  # crosses +-180
            shapely.box(185.0, 1.0, 186.0, 2.0),  # beyond 180
            shapely.box(-100.0, 0.0, 100.0, 1.0),  # wider than 180
            shapely.LineString([(-89.6, 5.0), (89.3, 6.0)]),  # just under 179 wide
            shapely.Point(-180.0, 90.0),
        ]
        + stars(np.random.default_rng(5), np.linspace(-179, 179, 30), np.linspace(-80, 80, 30), 50_000.0),
        dtype=object,
    )
    fast, slow = lonlat_extents(geoms), _gap_extents(geoms)
    for name in ("west", "east", "south", "north"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert (fast.west[2], fast.east[2]) == (179.5, 180.5)
    centre = fast.centre
    shifted = normalise_lon(geoms, centre)
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    coords[:, 0] += 360.0 * np.round((centre[idx] - coords[:, 0]) / 360.0)
    assert shapely.equals_exact(shifted, shapely.set_coordinates(geoms.copy(), coords), tolerance=0).all()


# --- geodesic rings ----------------------------------------------------------------------------------------

LATS = [-90.0, -89.99, -86.0, -83.9, -60.0, -0.01, 0.0, 0.01, 30.0, 52.0, 83.0, 84.5, 89.999, 90.0]
LONS = [-180.0, -179.999, -3.0, 0.0, 2.999, 3.0, 11.5, 116.4, 179.99, 180.0]


@pytest.mark.parametrize("radius", [1_000.0, 100_000.0, 600_000.0])
def test_point_buffers_are_geodesic_rings(radius: float) -> None:
    """Every ring vertex lies within radius * (1 +- the feature's recorded scale error) of the point."""
    pts = np.array([shapely.Point(x, y) for y in LATS for x in LONS], dtype=object)
    res = localcrs.apply_local(pts, WGS84, radius, lambda g: buffer_planar(g, radius))
    table = buffer(layer(list(pts)), params(radius))
    assert table.metadata["max_scale_error"] == pytest.approx(float(np.max(res.scale_error)))
    assert table.metadata["max_scale_error"] <= 1.0e-3 + 0.03 * (radius > 500_000)
    for pt, g, err in zip(pts, res.geoms, res.scale_error, strict=True):
        assert g.is_valid and g.geom_type in ("Polygon", "MultiPolygon")
        xy = shapely.get_coordinates(g)
        seam = (np.abs(np.abs(xy[:, 0]) - 180.0) < 1e-9) | (np.abs(xy[:, 1]) > 90.0 - 1e-9)
        xy = xy[~seam]  # points added where the ring is cut at +-180 or closed along a pole
        _, _, dist = GEOD.inv(np.full(len(xy), pt.x), np.full(len(xy), pt.y), xy[:, 0], xy[:, 1])
        tol = err * 1.02 + 1e-9  # the spherical estimate of the ellipsoidal scale, and rounding
        assert dist.max() <= radius * (1 + tol) + 1e-6, (pt, dist.max() / radius - 1, err)
        on_ring = np.abs(dist / radius - 1) <= tol + 1e-6 / radius
        # the circle's 4 * quad_segs vertices, but for the two due north and south of a point on +-180
        assert np.unique(np.round(xy[on_ring], 9), axis=0).shape[0] >= 30, (pt, err)


def test_multipart_feature_eroded_away_is_dropped() -> None:
    """A multi-part feature whose every part vanishes (last in its batch) is dropped, not an error."""
    gdf = layer([shapely.box(10.0, 50.0, 10.1, 50.1), shapely.MultiPoint([(9.0, 50.0), (15.0, 50.0)])])
    out = buffer(gdf, params(-100.0))
    assert out.metadata["dropped_empty"] == 1 and list(out.gdf["id"]) == [0]
