"""Reproject: known coordinates, round trips, axis order, errors, grids, metadata, CRS helpers."""

from __future__ import annotations

import importlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from pydantic import ValidationError
from pyproj.transformer import AreaOfInterest, TransformerGroup
from shapely import LineString, MultiPolygon, Point, Polygon

from geoservice.analysis.crs import (
    area_of_interest,
    crs_label,
    get_transformer,
    is_geographic,
    parse_crs,
)
from geoservice.analysis.errors import (
    AnalysisInputError,
    EmptyInput,
    MissingCRS,
    TransformationUnavailable,
    UnknownCRS,
    UnsupportedGeometryType,
)
from geoservice.analysis.reproject import ReprojectParams, reproject, transform_coordinates
from geoservice.analysis.summary import geodesic_summary

ORTHO = "+proj=ortho +lat_0=0 +lon_0=0 +datum=WGS84"


def params(**kw: object) -> ReprojectParams:
    return ReprojectParams.model_validate(kw)


def layer(geoms: list, crs: object = 4326, **cols: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols or {"id": list(range(len(geoms)))}, geometry=geoms, crs=crs)


def xy(gdf: gpd.GeoDataFrame, row: int = 0) -> tuple[float, float]:
    point = gdf.geometry.iloc[row]
    return point.x, point.y


@pytest.fixture(autouse=True)
def _no_proj_network() -> None:
    # The grid tests rely on grids being missing: PROJ must not fetch them from the CDN.
    assert not pyproj.network.is_network_enabled()


# -- known coordinates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "lonlat", "expected", "tolerance"),
    [
        # EPSG Guidance Note 7-2 worked examples (conversions; no datum change).
        (4277, 27700, (0.5, 50.5), (577274.99, 69740.50), 0.01),  # Transverse Mercator, British National Grid
        (4267, 32040, (-96.0, 28.5), (2963503.91, 254759.80), 0.01),  # LCC 2SP, Texas South Central (US ft)
        (4289, 28992, (6.0, 53.0), (196105.283, 557057.739), 0.001),  # Oblique Stereographic, RD New
        (4326, 3857, (-100.33333333333333, 24.381786944444446), (-11169055.58, 2800000.00), 0.01),
        # Web Mercator of lon 180 on the equator: pi * 6378137.
        (4326, 3857, (180.0, 0.0), (20037508.342789244, 0.0), 1e-6),
        # UTM: zone 31N central meridian (cs2cs vectors) and ETRS89 / UTM 32N (gie vectors).
        (4326, 32631, (3.0, 49.0), (500000.00, 5427455.78), 0.005),
        (4258, 25832, (12.0, 55.0), (691875.6321, 6098907.8250), 0.0001),
    ],
)
def test_known_coordinates(src: int, dst: int, lonlat: tuple, expected: tuple, tolerance: float) -> None:
    out = reproject(layer([Point(*lonlat)], crs=src), params(target_crs=dst))
    assert out.gdf.crs == pyproj.CRS.from_epsg(dst)
    assert xy(out.gdf) == pytest.approx(expected, abs=tolerance)


def test_inverse_round_trip_keeps_geometries() -> None:
    polygon = Polygon([(2, 48), (3, 48), (3, 49), (2, 49)], [[(2.2, 48.2), (2.4, 48.2), (2.4, 48.4)]])
    geoms = [
        Point(2.35, 48.85, 35.0),
        LineString([(2, 48), (2.5, 48.5), (3, 49)]),
        polygon,
        MultiPolygon([polygon, Polygon([(4, 48), (5, 48), (5, 49)])]),
        None,
        Polygon(),
    ]
    original = layer(geoms, name=list("abcdef"), value=[1.5, 2, 3, 4, 5, 6])
    original.index = [10, 20, 30, 40, 50, 60]
    projected = reproject(original, params(target_crs="EPSG:2154")).gdf
    back = reproject(projected, params(target_crs="EPSG:4326")).gdf
    assert list(back.columns) == list(original.columns)
    assert list(back.index) == list(original.index)
    assert back["name"].tolist() == list("abcdef")
    assert back.geometry.iloc[4] is None and back.geometry.iloc[5].is_empty
    assert list(shapely.get_type_id(back.geometry.values)) == list(shapely.get_type_id(original.geometry.values))
    assert shapely.has_z(back.geometry.values).tolist() == [True, False, False, False, False, False]
    before = shapely.get_coordinates(original.geometry.values, include_z=True)
    after = shapely.get_coordinates(back.geometry.values, include_z=True)
    np.testing.assert_allclose(after[:, :2], before[:, :2], atol=1e-9)
    np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-6)  # NaN for 2D coordinates
    mid = shapely.get_coordinates(projected.geometry.values)
    assert 500_000 < mid[0, 0] < 800_000 and 6_700_000 < mid[0, 1] < 6_900_000  # Lambert-93 Paris


def test_input_layer_is_not_modified() -> None:
    original = layer([Point(3, 49)])
    reproject(original, params(target_crs=32631))
    assert xy(original) == (3, 49) and original.crs == pyproj.CRS.from_epsg(4326)


def test_source_crs_applies_when_the_input_has_none() -> None:
    out = reproject(layer([Point(500000, 5427455.78)], crs=None), params(target_crs=4326, source_crs=32631))
    assert xy(out.gdf) == pytest.approx((3.0, 49.0), abs=1e-7)
    assert out.metadata["source_crs"] == "EPSG:32631"


def test_source_crs_conflicting_with_the_input_crs_is_an_error() -> None:
    with pytest.raises(AnalysisInputError, match="applies only to inputs without a CRS") as exc:
        reproject(layer([Point(3, 49)]), params(target_crs=32631, source_crs=3857))
    assert exc.value.field == "source_crs"
    # The same CRS (in either axis order) is no conflict.
    reproject(layer([Point(3, 49)]), params(target_crs=32631, source_crs="OGC:CRS84"))


# -- axis order ------------------------------------------------------------------------------------


def test_always_xy_false_gives_authority_axis_order() -> None:
    mercator = layer([Point(-11169055.58, 2800000.0)], crs=3857)
    xy_out = reproject(mercator, params(target_crs=4326)).gdf
    authority = reproject(mercator, params(target_crs=4326, always_xy=False))
    assert xy(xy_out) == pytest.approx((-100.33333333, 24.38178694), abs=1e-7)
    assert xy(authority.gdf) == pytest.approx((24.38178694, -100.33333333), abs=1e-7)  # lat, lon
    assert authority.metadata["axis_order"] == "authority"
    # The geodesic summary knows the coordinates are lat/lon: the extent is lat, lon too.
    assert authority.metadata["extent"][:2] == pytest.approx([24.38178694, -100.33333333], abs=1e-7)


def test_always_xy_false_still_reads_the_input_as_x_y() -> None:
    # Stored lon/lat (GeoJSON, PostGIS) is read the same way; only the output order changes.
    data = layer([Point(3, 49)])
    normal = reproject(data, params(target_crs=32631)).gdf
    authority = reproject(data, params(target_crs=32631, always_xy=False)).gdf  # UTM is E, N anyway
    assert xy(authority) == pytest.approx(xy(normal), abs=1e-9)
    swapped_target = reproject(data, params(target_crs=4258, always_xy=False)).gdf
    assert xy(swapped_target) == pytest.approx((49, 3), abs=1e-6)


# -- errors ----------------------------------------------------------------------------------------


def test_missing_crs() -> None:
    with pytest.raises(MissingCRS) as exc:
        reproject(layer([Point(3, 49)], crs=None), params(target_crs=32631))
    assert exc.value.field == "source_crs" and exc.value.status_code == 422


def test_empty_input() -> None:
    with pytest.raises(EmptyInput):
        reproject(layer([]), params(target_crs=32631))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (999999, "unknown EPSG code 999999"),
        ("EPSG:999999", "unknown EPSG code 999999"),
        ("999999", "unknown EPSG code 999999"),
        ("ESRI:1", "unknown CRS code ESRI:1"),
        ("not a crs", "cannot parse 'not a crs' as a CRS"),
        ("", "the CRS is empty"),
        (0, "EPSG codes are positive integers"),
        ("EPSG:5703", "is a Vertical CRS; a horizontal"),
        (True, "not a boolean"),
    ],
)
def test_unknown_target_crs_is_a_validation_error_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        params(target_crs=value)
    errors = exc.value.errors()
    assert [e["loc"] for e in errors] == [("target_crs",)], errors
    assert message in errors[0]["msg"]


def test_unknown_source_crs_names_source_crs() -> None:
    with pytest.raises(ValidationError) as exc:
        params(target_crs=4326, source_crs="EPSG:999999")
    assert exc.value.errors()[0]["loc"] == ("source_crs",)


def test_parse_crs_error_is_unknown_crs_with_field() -> None:
    with pytest.raises(UnknownCRS, match="unknown EPSG code 999999") as exc:
        parse_crs("EPSG:999999", field="target_crs")
    assert exc.value.field == "target_crs"
    assert exc.value.to_dict()["error"] == "UnknownCRS"


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        params(target_crs=4326, targetcrs=3857)


def test_point_outside_the_projection_domain_names_the_feature() -> None:
    data = layer([Point(0, 0), Point(10, 10), Point(120, 0)])
    data.index = ["a", "b", "far side"]
    with pytest.raises(AnalysisInputError, match="feature far side") as exc:
        reproject(data, params(target_crs=ORTHO))
    assert exc.value.feature == "far side"
    assert "(120, 0)" in exc.value.detail


def test_a_proj_string_without_datum_needs_allow_ballpark() -> None:
    # +ellps alone means an unknown datum: only a ballpark transformation relates it to WGS 84.
    target = "+proj=ortho +lat_0=0 +lon_0=0 +ellps=WGS84"
    with pytest.raises(TransformationUnavailable, match=r"to \+proj=ortho .*set allow_ballpark"):
        reproject(layer([Point(1, 2)]), params(target_crs=target))
    out = reproject(layer([Point(1, 2)]), params(target_crs=target, allow_ballpark=True))
    assert out.metadata["transformation"]["ballpark"] is True


def test_measured_geometries_are_refused() -> None:
    data = layer([Point(1, 2), shapely.from_wkt("POINT M (1 2 3)")])
    with pytest.raises(UnsupportedGeometryType) as exc:
        reproject(data, params(target_crs=3857))
    assert exc.value.feature == 1


# -- grids and ballpark ----------------------------------------------------------------------------

AUSTIN = Point(-97.74, 30.27)


def test_grid_needing_transformation_is_unavailable_and_names_the_grid() -> None:
    # Check the premise with PROJ itself: the best NAD27 -> NAD83 operation in Texas needs a grid.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Best transformation is not available"
        texas = AreaOfInterest(-97.75, 30.26, -97.73, 30.28)
        group = TransformerGroup(4267, 4269, always_xy=True, allow_ballpark=False, area_of_interest=texas)
    assert not group.best_available
    grids = [g.short_name for g in group.unavailable_operations[0].grids if not g.available]
    assert grids
    with pytest.raises(TransformationUnavailable) as exc:
        reproject(layer([AUSTIN], crs=4267), params(target_crs=4269))
    for grid in grids:
        assert grid in exc.value.detail
    assert exc.value.to_dict()["grids"] == grids
    assert "allow_ballpark" in exc.value.detail


def test_grid_needing_transformation_succeeds_with_allow_ballpark() -> None:
    out = reproject(layer([AUSTIN], crs=4267), params(target_crs=4269, allow_ballpark=True))
    used = out.metadata["transformation"]
    assert used["best_available"] is False
    assert any("nadcon5" in g or "conus" in g for g in used["grids_missing"])
    # As PROJ does (GH-3613), the fallback goes through WGS 84 by Helmert shifts, not a ballpark offset.
    assert "NAD27 to WGS 84" in used["description"] and "NAD83 to WGS 84" in used["description"]
    assert used["ballpark"] is False and used["accuracy_m"] == pytest.approx(11.0)
    assert xy(out.gdf) == pytest.approx((-97.7403049, 30.2702094), abs=1e-6)


def test_fallback_without_any_datum_link_is_a_ballpark_one() -> None:
    target = "+proj=longlat +ellps=clrk66 +no_defs"  # no datum: only a ballpark offset relates them
    out = reproject(layer([AUSTIN], crs=4267), params(target_crs=target, allow_ballpark=True))
    assert out.metadata["transformation"]["ballpark"] is True
    assert out.metadata["transformation"]["accuracy_m"] is None


def test_transformation_is_chosen_for_the_data_area() -> None:
    # Without the area, PROJ ranks the Canadian NAD27 -> WGS 84 Helmert first; Texas needs the US one.
    out = reproject(layer([AUSTIN], crs=4267), params(target_crs=4326, allow_ballpark=True))
    used = out.metadata["transformation"]
    assert "NAD27 to WGS 84" in used["description"]
    assert "CONUS" in used["area_of_use"] or "United States" in used["area_of_use"]


# -- metadata, progress and the summary ------------------------------------------------------------


def test_metadata() -> None:
    cell = Polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
    out = reproject(layer([cell, LineString([(0, 0), (0, 1)])]), params(target_crs=32631))
    meta = out.metadata
    json.dumps(meta)  # stored as JSONB
    assert meta["source_crs"] == "EPSG:4326" and meta["target_crs"] == "EPSG:32631"
    assert meta["strategy"] == "pyproj" and meta["feature_count"] == 2
    assert meta["transformation"]["description"].endswith("UTM zone 31N")
    assert meta["transformation"]["accuracy_m"] == 0.0 and meta["transformation"]["grids_missing"] == []
    assert "+proj=utm" in meta["transformation"]["pipeline"]
    assert meta["extent"] == pytest.approx(list(out.gdf.total_bounds))
    assert meta["geometry_types"] == ["LineString", "Polygon"]
    # 1 x 1 degree at the equator: 12 308.78 km² on WGS 84; 1 degree of meridian: 110 574.4 m.
    assert meta["geodesic_area_m2"] == pytest.approx(12_308_778_361, rel=1e-6)
    assert meta["geodesic_length_m"] == pytest.approx(110_574.389, rel=1e-6)


def test_progress_is_reported_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    rp = importlib.import_module("geoservice.analysis.reproject")
    monkeypatch.setattr(rp, "CHUNK_SIZE", 4)
    calls: list[tuple[float, str]] = []
    data = layer([LineString([(0, i), (1, i), (2, i)]) for i in range(5)])  # 15 coordinates
    reproject(data, params(target_crs=3857), progress=lambda f, m: calls.append((f, m)))
    assert [m for _, m in calls] == ["computing"] * 5
    assert [f for f, _ in calls] == pytest.approx([0, 4 / 15, 8 / 15, 12 / 15, 1])


def test_large_layer_is_transformed_vectorised() -> None:
    rng = np.random.default_rng(1)
    points = shapely.points(rng.uniform(-5, 5, 300_000), rng.uniform(40, 50, 300_000))
    data = gpd.GeoDataFrame(geometry=points, crs=4326)
    out = reproject(data, params(target_crs=3857)).gdf
    expected = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(
        shapely.get_x(points), shapely.get_y(points)
    )
    np.testing.assert_allclose(shapely.get_x(out.geometry.values), expected[0])
    np.testing.assert_allclose(shapely.get_y(out.geometry.values), expected[1])


def test_reproject_is_thread_safe() -> None:
    data = layer([Point(2 + i / 100, 48 + i / 100) for i in range(200)])
    expected = shapely.get_coordinates(reproject(data, params(target_crs=2154)).gdf.geometry.values)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: reproject(data, params(target_crs=2154)), range(16)))
    for result in results:
        np.testing.assert_array_equal(shapely.get_coordinates(result.gdf.geometry.values), expected)


def test_geodesic_summary() -> None:
    outer = [(0, 0), (2, 0), (2, 2), (0, 2)]
    hole = [(0.5, 0.5), (1.5, 0.5), (1.5, 1.5), (0.5, 1.5)]
    full, with_hole = Polygon(outer), Polygon(outer, [hole])
    clockwise = Polygon(outer[::-1], [hole[::-1]])
    geod = pyproj.Geod(ellps="WGS84")
    hole_area = abs(geod.geometry_area_perimeter(Polygon(hole))[0])
    full_area = abs(geod.geometry_area_perimeter(full)[0])
    summary = geodesic_summary(layer([with_hole]))
    assert summary["geodesic_area_m2"] == pytest.approx(full_area - hole_area, rel=1e-9)
    assert geodesic_summary(layer([clockwise]))["geodesic_area_m2"] == pytest.approx(full_area - hole_area)
    collection = shapely.GeometryCollection([full, LineString([(0, 0), (0, 1)]), Point(5, 5)])
    mixed = geodesic_summary(layer([collection, MultiPolygon([full])]))
    assert mixed["geodesic_area_m2"] == pytest.approx(2 * full_area)
    assert mixed["geodesic_length_m"] == pytest.approx(110_574.389, rel=1e-6)
    assert mixed["geometry_types"] == ["GeometryCollection", "MultiPolygon"]
    points = geodesic_summary(layer([Point(1, 2), Point(3, 4)]))
    assert points == {"feature_count": 2, "extent": [1, 2, 3, 4], "geometry_types": ["Point"]}
    projected = layer([full], crs=4326).to_crs(3857)
    assert geodesic_summary(projected)["geodesic_area_m2"] == pytest.approx(full_area, rel=1e-6)
    with pytest.raises(MissingCRS):
        geodesic_summary(layer([full], crs=None))


# -- CRS helpers and transform_coordinates ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (4326, "EPSG:4326"),
        ("4326", "EPSG:4326"),
        (" epsg:3857 ", "EPSG:3857"),
        ("OGC:CRS84", "OGC:CRS84"),
        ("urn:ogc:def:crs:EPSG::2154", "EPSG:2154"),
        (pyproj.CRS.from_epsg(28992).to_wkt(), "EPSG:28992"),
    ],
)
def test_parse_crs_and_label(value: str | int, label: str) -> None:
    assert crs_label(parse_crs(value, field="crs")) == label


def test_label_of_a_crs_without_authority_is_its_wkt() -> None:
    crs = parse_crs("+proj=ortho +lat_0=10 +lon_0=20 +ellps=WGS84", field="crs")
    label = crs_label(crs)
    assert label.startswith(("PROJCRS", "BOUNDCRS"))
    assert parse_crs(label, field="crs").equals(crs)


def test_is_geographic() -> None:
    assert is_geographic(parse_crs(4326, field="crs")) and is_geographic(parse_crs("OGC:CRS84", field="crs"))
    assert not is_geographic(parse_crs(3857, field="crs"))


def test_transformers_are_cached_per_definition_and_flags() -> None:
    wgs84, utm = parse_crs(4326, field="a"), parse_crs(32631, field="b")
    first, info = get_transformer(wgs84, utm, always_xy=True, allow_ballpark=False)
    again, _ = get_transformer(parse_crs("EPSG:4326", field="a"), utm, always_xy=True, allow_ballpark=False)
    other, _ = get_transformer(wgs84, utm, always_xy=False, allow_ballpark=False)
    assert first is again and first is not other
    info["grids_missing"].append("mutated")  # callers get their own copy
    assert get_transformer(wgs84, utm, always_xy=True, allow_ballpark=False)[1]["grids_missing"] == []


def test_cache_tells_apart_crs_that_share_a_wkt() -> None:
    # +approx selects another algorithm, which WKT cannot express; equal-looking CRSs must not share.
    exact = parse_crs("+proj=etmerc +k=0.998 +lon_0=-20 +datum=WGS84 +x_0=10000 +y_0=20000", field="a")
    approx = parse_crs("+proj=tmerc +approx +k=0.998 +lon_0=-20 +datum=WGS84 +x_0=10000 +y_0=20000", field="a")
    geographic = parse_crs("+proj=longlat +datum=WGS84", field="b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_exact, _ = get_transformer(exact, geographic, always_xy=True, allow_ballpark=True)
        t_approx, _ = get_transformer(approx, geographic, always_xy=True, allow_ballpark=True)
    far = (4_000_000.0, 2_000_000.0)
    assert abs(t_exact.transform(*far)[0] - t_approx.transform(*far)[0]) > 1e-3


def test_area_of_interest_crosses_the_antimeridian() -> None:
    coords = np.array([[179.9, -17.0], [-179.9, -16.0], [179.5, -18.0]])
    west, south, east, north = area_of_interest(coords, parse_crs(4326, field="crs"))
    assert (west, east) == pytest.approx((179.5, -179.9))
    assert (south, north) == pytest.approx((-18.0, -16.0))


def test_transform_coordinates_keeps_2d_coordinates_2d() -> None:
    transformer, _ = get_transformer(
        parse_crs(4979, field="a"), parse_crs(4978, field="b"), always_xy=True, allow_ballpark=False
    )
    coords = np.array([[12.0, 55.0, 10.0], [12.0, 55.0, np.nan]])
    out = transform_coordinates(coords, transformer)
    np.testing.assert_allclose(out[0], [3586475.2672, 762328.8513, 5201391.7147], atol=1e-4)
    assert np.isnan(out[1, 2]) and np.isfinite(out[1, :2]).all()
    assert coords[0, 0] == 12.0  # the input is not modified
    with pytest.raises(ValueError, match="shape"):
        transform_coordinates(np.zeros((3, 4)), transformer)
