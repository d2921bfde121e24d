"""geodesic_summary and its vectorised geodesic measures, checked against independent references.

References (none of them is the code under test):

* ``pyproj.Geod`` (GeographicLib, Karney 2013) on the same geometries: the exact algorithm.
* GeographicLib's C test suite (geographiclib/geographiclib-c, ``tests/geodtest.c``): GeodSolve0, 4 and
  74 (distances; the S12 of a 39.5 m edge), Planimeter0, 5 and 15 (areas around, across and away from a
  pole) and the area of the ellipsoid.
* Closed forms: the area of the zone between the equator and a parallel (authalic ``q``; Snyder 1987,
  "Map Projections: A Working Manual", eq. 3-12), the length of an arc of the equator (``a Δλ``) and of
  a meridian (Gauss-Legendre integral of the meridional radius of curvature M).
"""

from __future__ import annotations

import itertools
import math

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import CRS, Geod, Transformer
from shapely import LineString, MultiLineString, MultiPolygon, Point, Polygon

from geoservice.analysis import geodesic, summary
from geoservice.analysis.summary import geodesic_summary

GEOD = Geod(ellps="WGS84")
A, F = 6378137.0, 1 / 298.257223563
E2 = F * (2 - F)
E = math.sqrt(E2)


def layer(geoms: list, crs: object = 4326) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"id": range(len(geoms))}, geometry=geoms, crs=crs)


def area(geoms: list, crs: object = 4326, **kw: bool) -> float:
    return geodesic_summary(layer(geoms, crs), **kw)["geodesic_area_m2"]


def length(geoms: list, crs: object = 4326) -> float:
    return geodesic_summary(layer(geoms, crs))["geodesic_length_m"]


def pyproj_area(geom: shapely.Geometry) -> float:
    """|area| of every ring by Geod.polygon_area_perimeter, holes subtracted (orientation-free)."""
    total = 0.0
    for part in shapely.get_parts(geom):
        for i, ring in enumerate([part.exterior, *part.interiors]):
            lon, lat = np.asarray(ring.coords.xy)
            ring_area = abs(GEOD.polygon_area_perimeter(lon, lat)[0])
            total += -ring_area if i else ring_area
    return total


def densify(coords: list[tuple[float, float]], step_deg: float) -> list[tuple[float, float]]:
    """Insert points along each geodesic edge so that no edge spans more than ``step_deg``."""
    out = [coords[0]]
    for (x1, y1), (x2, y2) in zip(coords[:-1], coords[1:], strict=True):
        n = math.ceil(max(abs(x2 - x1), abs(y2 - y1)) / step_deg) - 1
        out += [tuple(p) for p in GEOD.npts(x1, y1, x2, y2, n)] if n > 0 else []
        out.append((x2, y2))
    return out


def all_edges_short(geom: shapely.Geometry) -> bool:
    """Whether every edge of ``geom`` (lon/lat) is measured by the vectorised formula."""
    return all(bool(geodesic.edge_areas(*np.asarray(r.coords.xy))[2].all())
               for p in shapely.get_parts(geom) for r in [p.exterior, *p.interiors])


def zone_q(lat_deg: float) -> float:
    """Snyder (1987) eq. 3-12: q(φ); the zone between the equator and φ is a²/2 · q(φ) per radian."""
    s = math.sin(math.radians(lat_deg))
    return (1 - E2) * (s / (1 - E2 * s * s) - math.log((1 - E * s) / (1 + E * s)) / (2 * E))


@pytest.fixture(scope="module")
def buffered() -> gpd.GeoDataFrame:
    """300 star polygons (32-64 vertices, radius ~500 m) buffered by 100 m in UTM 50N around Beijing."""
    gen = np.random.default_rng(20240601)
    n = 300
    nv = gen.integers(32, 65, n)
    owner = np.repeat(np.arange(n), nv)
    k = np.arange(nv.sum()) - np.repeat(np.cumsum(nv) - nv, nv)
    angle = gen.uniform(0, 2 * np.pi, n)[owner] + 2 * np.pi * k / nv[owner]
    radius = (500 * gen.uniform(0.5, 1.5, n))[owner] * (1 + gen.uniform(-0.1, 0.1, nv.sum()))
    cx, cy = gen.uniform(400_000, 500_000, n), gen.uniform(4_370_000, 4_470_000, n)
    xy = np.column_stack([cx[owner] + radius * np.cos(angle), cy[owner] + radius * np.sin(angle)])
    stars = shapely.polygons(shapely.linearrings(xy, indices=owner))
    return layer(list(shapely.buffer(stars, 100, quad_segs=8)), crs=32650)


# --- areas against pyproj.Geod ---------------------------------------------------------------------------


def test_buffered_polygons_match_pyproj_per_feature(buffered: gpd.GeoDataFrame) -> None:
    lonlat = buffered.to_crs(4326)
    assert all(all_edges_short(g) for g in lonlat.geometry.values)  # the vectorised formula is under test
    for i, geom in enumerate(lonlat.geometry.values):
        expected = pyproj_area(geom)  # about 0.2-2 km²; the measured worst difference is 5e-10 relative
        assert geodesic_summary(lonlat.iloc[[i]])["geodesic_area_m2"] == pytest.approx(expected, rel=2e-9)


def test_projected_input_is_transformed_to_lonlat(buffered: gpd.GeoDataFrame) -> None:
    expected = sum(pyproj_area(g) for g in buffered.to_crs(4326).geometry.values)
    assert area(list(buffered.geometry.values), crs=32650) == pytest.approx(expected, rel=1e-9)
    mercator = buffered.to_crs(3857)
    assert area(list(mercator.geometry.values), crs=3857) == pytest.approx(expected, rel=1e-9)


def test_latitude_first_coordinates_with_always_xy_false(buffered: gpd.GeoDataFrame) -> None:
    lonlat = list(buffered.to_crs(4326).geometry.values)
    latlon = [shapely.transform(g, lambda xy: xy[:, ::-1]) for g in lonlat]
    assert area(latlon, always_xy=False) == pytest.approx(area(lonlat), rel=1e-12)


def test_one_square_metre_against_closed_form() -> None:
    # A cell bounded by meridians and parallels has area Δλ · (Z(φ2) - Z(φ1)), Z' = M N cos φ; over
    # 1 m the parallel and the geodesic differ by ~1e-13 m². pyproj's own rounding is ~5e-5 m² here.
    for lat in (0.0, 37.0, 60.0, 84.0, -45.0):
        phi = math.radians(lat)
        w = math.sqrt(1 - E2 * math.sin(phi) ** 2)
        m, n = A * (1 - E2) / w**3, A / w
        dlat, dlon = math.degrees(1 / m), math.degrees(1 / (n * math.cos(phi)))
        cell = shapely.box(100.0, lat - dlat / 2, 100.0 + dlon, lat + dlat / 2)
        # Z(φ2) - Z(φ1) by 3-point Gauss-Legendre on M N cos φ (exact to ~1e-20 relative over 1 m)
        nodes = [phi + math.radians(dlat) / 2 * t for t in (-math.sqrt(0.6), 0.0, math.sqrt(0.6))]
        radii = [A * A * (1 - E2) * math.cos(p) / (1 - E2 * math.sin(p) ** 2) ** 2 for p in nodes]
        expected = math.radians(dlon) * math.radians(dlat) / 2 * (5 * radii[0] + 8 * radii[1] + 5 * radii[2]) / 9
        assert expected == pytest.approx(1.0, rel=1e-6)
        assert area([cell]) == pytest.approx(expected, rel=1e-8)
        assert area([cell]) == pytest.approx(pyproj_area(cell), abs=2e-4)


# --- areas against published and closed-form values ------------------------------------------------------


def test_ellipsoid_and_zone_areas() -> None:
    assert geodesic.ELLIPSOID_AREA == pytest.approx(510065621724088.5093, rel=1e-15)  # geodtest.c, a0
    for lat in (0.5, 10, 45, 80, 90):
        expected = A * A / 2 * zone_q(lat)
        assert geodesic.zone_area(np.sin(np.radians(lat))) == pytest.approx(expected, rel=1e-12)


def test_one_degree_cell_at_the_equator() -> None:
    # Independent reference: the band between the equator and the parallel at 1° (closed form) plus
    # the bulge of the northern geodesic edge beyond that parallel, integrated numerically on points
    # of the geodesic (Geod.npts: GeographicLib's direct problem, not its area code).
    band = A * A / 2 * zone_q(1.0) * math.radians(1.0)
    pts = np.array([(0.0, 1.0), *GEOD.npts(0, 1, 1, 1, 3999), (1.0, 1.0)])
    bulge = A * A / 2 * (np.array([zone_q(v) for v in pts[:, 1]]) - zone_q(1.0))
    lam = np.radians(pts[:, 0])

    def trapezoid(step: int) -> float:
        return float(np.sum((bulge[::step][1:] + bulge[::step][:-1]) / 2 * np.diff(lam[::step])))

    expected = band + trapezoid(1) + (trapezoid(1) - trapezoid(2)) / 3  # Richardson
    assert expected == pytest.approx(12_308_778_361.47, abs=0.05)  # the figure quoted for the cell
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
    assert area([Polygon(corners)]) == pytest.approx(expected, abs=0.05)  # 1° edges: pyproj.Geod
    dense = Polygon(densify(corners, 0.01))
    assert all_edges_short(dense)
    assert area([dense]) == pytest.approx(expected, abs=0.05)  # same polygon, by the formula


@pytest.mark.parametrize(
    ("lonlat", "expected", "tolerance"),
    [
        ([(0, 89), (90, 89), (180, 89), (270, 89)], 24952305678.0, 1),  # Planimeter0 pa: round the pole
        ([(0, -89), (90, -89), (180, -89), (270, -89)], 24952305678.0, 1),  # pb
        ([(-1, 0), (0, -1), (1, 0), (0, 1)], 24619419146.0, 1),  # pc: across the equator and meridian 0
        ([(0.1, 89), (90.1, 89), (-179.9, 89)], 12476152838.5, 1),  # Planimeter5: across the pole
        ([(1, 2), (2, 1), (3, 3)], 18454562325.45119, 0.5),  # Planimeter15
    ],
)
def test_geographiclib_planimeter_cases(lonlat: list, expected: float, tolerance: float) -> None:
    ring = [*lonlat, lonlat[0]]
    assert area([Polygon(ring)]) == pytest.approx(expected, abs=tolerance)
    assert area([Polygon(ring[::-1])]) == pytest.approx(expected, abs=tolerance)  # orientation-free
    if max(abs(lat) for _, lat in lonlat) < 80:
        dense = Polygon(densify(ring, 0.01))
        assert all_edges_short(dense)
        assert area([dense]) == pytest.approx(expected, abs=tolerance)


def test_edge_area_of_a_short_edge() -> None:
    # GeodSolve74: the 39.5 m geodesic from (54.1589, 15.3872) to (54.1591, 15.3877) has
    # S12 = 286698586.30197 m² (GeographicLib's sign: clockwise positive).
    edge, dlam, short = geodesic.edge_areas(np.array([15.3872, 15.3877]), np.array([54.1589, 54.1591]))
    assert short.all()
    assert dlam[0] == pytest.approx(math.radians(0.0005), rel=1e-12)
    assert edge[0] == pytest.approx(-286698586.30197, abs=5e-4)


# --- antimeridian, poles -----------------------------------------------------------------------------------


def test_antimeridian_ring_equals_the_same_ring_elsewhere() -> None:
    square = [(-0.05, 10.0), (0.05, 10.0), (0.05, 10.1), (-0.05, 10.1), (-0.05, 10.0)]
    at_zero = Polygon(densify(square, 0.01))
    across = shapely.transform(at_zero, lambda xy: np.column_stack([(xy[:, 0] + 360) % 360 - 180, xy[:, 1]]))
    assert shapely.get_coordinates(across)[:, 0].min() < -179.9  # both sides of ±180
    assert shapely.get_coordinates(across)[:, 0].max() > 179.9
    assert all_edges_short(across)
    assert area([across]) == pytest.approx(area([at_zero]), rel=1e-12)  # the ellipsoid is symmetric
    assert area([across]) == pytest.approx(pyproj_area(across), rel=1e-9)


def test_natural_earth_countries_across_the_antimeridian_and_round_the_pole() -> None:
    from pathlib import Path

    countries = gpd.read_file(Path(__file__).resolve().parents[2] / "sample_data" / "countries.geojson")
    for name in ("Fiji", "Russia", "Antarctica"):
        geom = countries.loc[countries["name"] == name].geometry.values[0]
        assert area([geom]) == pytest.approx(pyproj_area(geom), rel=1e-12)  # long edges: pyproj itself
    fiji = countries.loc[countries["name"] == "Fiji"].geometry.values[0]
    dense = MultiPolygon([Polygon(densify(list(p.exterior.coords), 0.01)) for p in fiji.geoms])
    assert all_edges_short(dense)
    assert area([dense]) == pytest.approx(pyproj_area(dense), rel=1e-9)


def test_ring_round_the_pole_with_short_edges() -> None:
    # 36,000 vertices on the parallel at 80° N: the cap's area 2π(Z(90°) - Z(80°)) in closed form,
    # less ~5e-9 for the geodesic chords.
    lon = np.linspace(-180, 180, 36_001)
    ring = Polygon(np.column_stack([lon, np.full_like(lon, 80.0)]))
    cap = 2 * math.pi * A * A / 2 * (zone_q(90) - zone_q(80))
    assert area([ring]) == pytest.approx(cap, rel=2e-8)
    near_pole = Polygon(densify([(10, 84.5), (10.2, 84.5), (10.2, 84.9), (10, 84.9), (10, 84.5)], 0.01))
    assert all_edges_short(near_pole)
    assert area([near_pole]) == pytest.approx(pyproj_area(near_pole), rel=1e-9)


# --- structure: holes, parts, empties, CRSs, chunks -----------------------------------------------------


def test_holes_subtract_and_parts_add() -> None:
    outer = densify([(116.0, 40.0), (116.1, 40.0), (116.1, 40.1), (116.0, 40.1), (116.0, 40.0)], 0.01)
    hole = densify([(116.02, 40.02), (116.05, 40.02), (116.05, 40.05), (116.02, 40.05), (116.02, 40.02)], 0.01)
    full, holed = Polygon(outer), Polygon(outer, [hole])
    expected = pyproj_area(full) - abs(GEOD.polygon_area_perimeter(*np.asarray(Polygon(hole).exterior.coords.xy))[0])
    assert area([holed]) == pytest.approx(expected, rel=1e-9)
    assert area([Polygon(outer[::-1], [hole[::-1]])]) == pytest.approx(expected, rel=1e-12)
    far = shapely.affinity.translate(full, 30.0, -70.0)
    assert area([MultiPolygon([holed, far])]) == pytest.approx(expected + pyproj_area(far), rel=1e-9)
    collection = shapely.GeometryCollection([holed, LineString([(0, 0), (0, 1)]), Point(5, 5)])
    summary_ = geodesic_summary(layer([collection, None, Polygon(), MultiPolygon([far])]))
    assert summary_["feature_count"] == 4
    assert summary_["geometry_types"] == ["GeometryCollection", "MultiPolygon"]  # empties are not listed
    assert summary_["geodesic_area_m2"] == pytest.approx(expected + pyproj_area(far), rel=1e-9)
    assert summary_["geodesic_length_m"] == pytest.approx(GEOD.line_length([0, 0], [0, 1]), rel=1e-12)


def test_empty_and_missing_geometries() -> None:
    assert geodesic_summary(layer([None, Polygon(), LineString()])) == {
        "feature_count": 3, "extent": None, "geometry_types": []}
    assert geodesic_summary(layer([])) == {"feature_count": 0, "extent": None, "geometry_types": []}
    assert geodesic_summary(layer([Point(1, 2), Point(3, 4)])) == {
        "feature_count": 2, "extent": [1.0, 2.0, 3.0, 4.0], "geometry_types": ["Point"]}


def test_no_measures_without_a_link_to_the_earth() -> None:
    site = CRS.from_wkt('ENGCRS["site grid",EDATUM["site"],CS[Cartesian,2],AXIS["x",east,ORDER[1],'
                        'LENGTHUNIT["metre",1]],AXIS["y",north,ORDER[2],LENGTHUNIT["metre",1]]]')
    out = geodesic_summary(layer([shapely.box(0, 0, 10, 10), LineString([(0, 0), (5, 5)])], crs=site))
    assert out["geodesic_area_m2"] is None and out["geodesic_length_m"] is None
    assert out["extent"] == [0.0, 0.0, 10.0, 10.0]
    beyond = geodesic_summary(layer([LineString([(500_000, 0), (1e12, 5)])], crs=32650))
    assert beyond["geodesic_length_m"] is None  # coordinates that do not map to lon/lat


def test_sum_over_chunks_equals_the_whole(buffered: gpd.GeoDataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = geodesic_summary(buffered)["geodesic_area_m2"]
    spans = list(itertools.pairwise([0, 1, 8, 58, 211, len(buffered)]))
    chunks = sum(geodesic_summary(buffered.iloc[a:b])["geodesic_area_m2"] for a, b in spans)
    assert chunks == pytest.approx(whole, rel=1e-9)
    monkeypatch.setattr(summary, "_BLOCK_VERTICES", 1000)  # many internal blocks
    assert geodesic_summary(buffered)["geodesic_area_m2"] == pytest.approx(whole, rel=1e-12)
    lines = layer(list(shapely.get_exterior_ring(buffered.geometry.values)), crs=32650)
    assert geodesic_summary(lines)["geodesic_length_m"] == pytest.approx(
        sum(geodesic_summary(lines.iloc[a:b])["geodesic_length_m"] for a, b in spans), rel=1e-12)


# --- lengths -----------------------------------------------------------------------------------------------


def test_geographiclib_distances() -> None:
    assert length([LineString([(15.3872, 54.1589), (15.3877, 54.1591)])]) == pytest.approx(39.527686385, abs=5e-9)
    assert length([LineString([(0, 36.493349428792), (0.0000008, 36.49334942879201)])]) == pytest.approx(
        0.072, abs=0.5e-3)  # GeodSolve4
    assert length([LineString([(-73.8, 40.6), (2.55, 49.01666667)])]) == pytest.approx(5853226, abs=0.5)


def test_equator_and_meridian_arcs() -> None:
    assert length([LineString([(10.0, 0.0), (10.01, 0.0)])]) == pytest.approx(A * math.radians(0.01), rel=1e-11)
    # Meridian arc from 45° to 45.05°: ∫ M dφ, M = a (1 - e²) / (1 - e² sin² φ)^1.5, by Gauss-Legendre.
    x, w = np.polynomial.legendre.leggauss(8)
    phi = math.radians(45.025) + math.radians(0.025) * x
    arc = math.radians(0.025) * float(np.sum(w * A * (1 - E2) / (1 - E2 * np.sin(phi) ** 2) ** 1.5))
    assert length([LineString([(7.0, 45.0), (7.0, 45.05)])]) == pytest.approx(arc, rel=1e-12)


def test_lines_match_pyproj() -> None:
    gen = np.random.default_rng(7)
    lines = []
    for lat in (-89.5, -60.0, 0.0, 33.0, 71.0, 89.99):
        for step in (1.0, 300.0, 9_000.0, 50_000.0):  # the last: longer than SHORT_CHORD_M
            lon, la, _ = GEOD.fwd(np.full(20, 179.0), np.full(20, lat), gen.uniform(0, 360, 20), np.full(20, step))
            lines.append(LineString(np.column_stack([np.append(179.0, lon), np.append(lat, la)])[:2]))
            az = gen.uniform(0, 360)
            walk = [(179.99, lat)]
            for _ in range(30):
                x, y, _ = GEOD.fwd(*walk[-1], az, step)
                walk.append((x, y))
            lines.append(LineString(walk))  # crosses the antimeridian at some steps
    for line in lines:
        expected = GEOD.line_length(*np.asarray(line.coords.xy))
        assert length([line]) == pytest.approx(expected, rel=1e-9, abs=1e-8)
    assert length([MultiLineString(lines[:5])]) == pytest.approx(sum(length([g]) for g in lines[:5]), rel=1e-12)


def test_projected_lines(buffered: gpd.GeoDataFrame) -> None:
    rings = list(shapely.get_exterior_ring(buffered.geometry.values))
    to_lonlat = Transformer.from_crs(32650, 4326, always_xy=True)
    expected = sum(GEOD.line_length(*to_lonlat.transform(*np.asarray(r.coords.xy))) for r in rings)
    assert length(rings, crs=32650) == pytest.approx(expected, rel=1e-9)
