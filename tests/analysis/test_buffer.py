"""Buffer: params, planar/projected strategies, styles, dissolve, and geodesic checks on lon/lat data."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pydantic import ValidationError
from pyproj import Geod

from geoservice.analysis.buffer import BufferParams, buffer, buffer_planar
from geoservice.analysis.errors import EmptyInput, MissingCRS, UnsupportedGeometryType
from geoservice.errors import InvalidInput

GEOD = Geod(ellps="WGS84")
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "countries.geojson"


def params(**kw: object) -> BufferParams:
    return BufferParams.model_validate(kw)


def polygon_area(r: float, quad_segs: int = 8) -> float:
    """Area of the regular polygon GEOS uses for a circle of radius ``r``."""
    n = 4 * quad_segs
    return n / 2 * r * r * math.sin(2 * math.pi / n)


def geodesic_area(g: shapely.Geometry) -> float:
    return abs(GEOD.geometry_area_perimeter(g)[0])


def layer(geoms: list, crs: object = 4326, **cols: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols or {"id": list(range(len(geoms)))}, geometry=geoms, crs=crs)


# --- params -------------------------------------------------------------------------------------------


def test_params_nested_and_flat_forms_are_equal() -> None:
    nested = params(distance={"value": 500, "unit": "m"})
    flat = params(distance=500, unit="m")
    assert nested == flat
    assert flat.distance.metres() == 500
    assert (flat.quad_segs, flat.cap_style, flat.join_style, flat.mitre_limit) == (8, "round", "round", 5.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"distance": 500}, "bare number has no unit"),
        ({"distance": {"value": 5, "unit": "m"}, "unit": "m"}, "not both"),
        ({"distance": {"value": 0, "unit": "m"}}, "must not be zero"),
        ({"distance": {"value": 1001, "unit": "km"}}, "at most 1,000 km"),
        ({"distance": {"value": -11, "unit": "degrees"}}, "at most 10 degrees"),
        ({"distance": {"value": 5, "unit": "furlong"}}, "unit"),
        ({"distance": {"value": 5, "unit": "m"}, "quad_segs": 0}, "quad_segs"),
        ({"distance": {"value": 5, "unit": "m"}, "cap_style": "butt"}, "cap_style"),
        ({"distance": {"value": 5, "unit": "m"}, "colour": "red"}, "colour"),
    ],
)
def test_params_rejects(body: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        params(**body)
    text = str(exc.value)
    assert message in text
    assert "distance" in text or message in ("quad_segs", "cap_style", "colour")


def test_negative_distance_allowed_in_range() -> None:
    assert params(distance=-1000, unit="km").distance.metres() == -1_000_000


# --- planar entry point ----------------------------------------------------------------------------------


def test_buffer_planar_styles() -> None:
    line = np.array([shapely.LineString([(0, 0), (10, 0)])])
    assert buffer_planar(line, 1, cap_style="flat")[0].area == pytest.approx(20)
    assert buffer_planar(line, 1, cap_style="square")[0].area == pytest.approx(24)
    assert buffer_planar(line, 1)[0].area == pytest.approx(20 + polygon_area(1))
    square = np.array([shapely.box(0, 0, 10, 10)])
    assert buffer_planar(square, 1, join_style="mitre")[0].area == pytest.approx(144)
    assert buffer_planar(square, 1, join_style="bevel")[0].area == pytest.approx(140 + 2)
    assert buffer_planar(square, -1)[0].area == pytest.approx(64)
    left = buffer_planar(line, 1, single_sided=True)[0]
    right = buffer_planar(line, -1, single_sided=True)[0]
    assert left.area == pytest.approx(10) and left.bounds[1] == pytest.approx(0) and left.bounds[3] > 0
    assert right.area == pytest.approx(10) and right.bounds[3] == pytest.approx(0)


# --- projected data ----------------------------------------------------------------------------------------


def test_projected_point_area_and_unit_conversion() -> None:
    gdf = layer([shapely.Point(500_000, 4_000_000)], crs=32633)
    out = buffer(gdf, params(distance=2, unit="km", quad_segs=16))
    assert out.gdf.geometry.iloc[0].area == pytest.approx(polygon_area(2000, 16))
    assert out.metadata["strategy"] == "projected"
    assert out.metadata["max_scale_error"] is None
    assert out.gdf.crs == gdf.crs


def test_projected_us_survey_feet() -> None:
    gdf = layer([shapely.Point(1_000_000, 200_000)], crs=2263)  # NY Long Island, US survey feet
    out = buffer(gdf, params(distance=1000, unit="ft"))
    radius = shapely.hausdorff_distance(out.gdf.geometry.iloc[0], gdf.geometry.iloc[0])
    assert radius == pytest.approx(1000 * 0.3048 / (1200 / 3937))


def test_degrees_on_projected_is_an_error() -> None:
    with pytest.raises(InvalidInput) as exc:
        buffer(layer([shapely.Point(0, 0)], crs=3857), params(distance=1, unit="degrees"))
    assert exc.value.field == "distance"


def test_errors() -> None:
    with pytest.raises(MissingCRS):
        buffer(layer([shapely.Point(0, 0)], crs=None), params(distance=1, unit="m"))
    with pytest.raises(EmptyInput):
        buffer(layer([], crs=3857), params(distance=1, unit="m"))
    with pytest.raises(UnsupportedGeometryType, match="lines only"):
        buffer(layer([shapely.box(0, 0, 1, 1)], crs=3857), params(distance=1, unit="m", single_sided=True))
    with pytest.raises(InvalidInput, match="dissolve_by"):
        buffer(layer([shapely.Point(0, 0)], crs=3857), params(distance=1, unit="m", dissolve_by="nope"))


def test_negative_buffer_drops_eroded_features_and_keeps_attributes() -> None:
    gdf = layer(
        [shapely.box(0, 0, 100, 100), shapely.box(200, 0, 205, 5), None], crs=3857, name=["big", "small", "null"]
    )
    out = buffer(gdf, params(distance=-10, unit="m", join_style="mitre"))
    assert list(out.gdf["name"]) == ["big"]
    assert out.gdf.geometry.iloc[0].area == pytest.approx(80 * 80)
    assert out.metadata["dropped_empty"] == 2
    assert out.metadata["feature_count"] == 1


def test_dissolve_all_and_by_attribute() -> None:
    pts = [shapely.Point(0, 0), shapely.Point(5, 0), shapely.Point(100, 0)]
    gdf = layer(pts, crs=3857, kind=["a", "a", "b"])
    all_ = buffer(gdf, params(distance=10, unit="m", dissolve=True)).gdf
    assert len(all_) == 1 and all_["feature_count"].iloc[0] == 3
    by = buffer(gdf, params(distance=10, unit="m", dissolve_by="kind")).gdf
    assert list(by["kind"]) == ["a", "b"] and list(by["feature_count"]) == [2, 1]
    assert by.geometry.iloc[0].geom_type == "Polygon"


def test_progress_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoservice.analysis.buffer as mod

    monkeypatch.setattr(mod, "CHUNK_SIZE", 2)
    calls: list[tuple[float, str]] = []
    buffer(
        layer([shapely.Point(i, 0) for i in range(5)], crs=3857),
        params(distance=1, unit="m"),
        lambda f, p: calls.append((f, p)),
    )
    assert calls == [(0.4, "computing"), (0.8, "computing"), (1.0, "computing")]


# --- geographic data ---------------------------------------------------------------------------------------

LATITUDES = [-89.9, -89.0, -85.0, -84.0, -60.0, -17.0, 0.0, 17.0, 45.0, 83.9, 85.0, 89.0, 89.9, 90.0, -90.0]


@pytest.mark.parametrize("radius", [500.0, 20_000.0])
def test_point_buffer_geodesic_area_everywhere(radius: float) -> None:
    """Geodesic area of point buffers ~ pi r^2, within the polygon bound, at every latitude and at +-180."""
    pts = [shapely.Point(lon, lat) for lat in LATITUDES for lon in (0.0, 2.999, 179.9, -179.9, 180.0)]
    out = buffer(layer(pts), params(distance=radius, unit="m"))
    assert len(out.gdf) == len(pts)
    err = out.metadata["max_scale_error"]
    assert 0 <= err <= 1.0e-3
    lower, upper = polygon_area(radius), math.pi * radius**2
    for pt, g in zip(pts, out.gdf.geometry, strict=True):
        assert g.is_valid, (pt, shapely.is_valid_reason(g))
        x0, y0, x1, y1 = g.bounds
        assert -180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90
        area = geodesic_area(g)
        assert lower * (1 - 2.1 * err) <= area <= upper, (pt, area / lower)
        assert area == pytest.approx(lower, rel=2.1 * err + 1e-6), pt


def test_antimeridian_results_are_split_not_wrapped() -> None:
    out = buffer(layer([shapely.Point(179.9, -17.0), shapely.Point(-179.99, 0.0)]), params(distance=20, unit="km"))
    for g in out.gdf.geometry:
        assert g.geom_type == "MultiPolygon" and g.is_valid
        widths = [p.bounds[2] - p.bounds[0] for p in g.geoms]
        assert max(widths) < 1.0  # two slivers at -180 and +180, not a band around the world
        assert {round(p.bounds[0]) for p in g.geoms} | {round(p.bounds[2]) for p in g.geoms} >= {-180, 180}
        assert geodesic_area(g) == pytest.approx(polygon_area(20_000), rel=2e-3)


@pytest.mark.parametrize("pole", [90.0, -90.0])
def test_buffer_containing_a_pole(pole: float) -> None:
    lat = pole - math.copysign(0.1, pole)  # 11 km from the pole
    out = buffer(layer([shapely.Point(37.0, lat)]), params(distance=20, unit="km"))
    g = out.gdf.geometry.iloc[0]
    assert g.is_valid and g.geom_type == "Polygon"
    assert g.bounds[0] == -180 and g.bounds[2] == 180
    assert (g.bounds[3] if pole > 0 else g.bounds[1]) == pole
    assert g.covers(shapely.Point(0.0, pole)) and g.covers(shapely.Point(37.0, lat))
    assert geodesic_area(g) == pytest.approx(polygon_area(20_000), rel=1e-4)
    assert out.metadata["strategy_counts"] == {"local-aeqd": 1}


def test_planar_degrees_on_geographic() -> None:
    out = buffer(layer([shapely.Point(179.5, 0.0)]), params(distance=1, unit="degrees"))
    g = out.gdf.geometry.iloc[0]
    assert out.metadata["strategy"] == "planar-degrees"
    assert g.geom_type == "MultiPolygon" and g.area == pytest.approx(polygon_area(1.0))
    assert -180 <= g.bounds[0] and g.bounds[2] <= 180


def test_utm_used_for_small_features_with_small_scale_error() -> None:
    out = buffer(layer([shapely.Point(15.0, 45.0), shapely.Point(17.5, 45.0)]), params(distance=500, unit="m"))
    assert out.metadata["strategy"] == "local-utm/aeqd per feature"
    assert out.metadata["strategy_counts"] == {"local-utm": 2}
    assert 3.9e-4 < out.metadata["max_scale_error"] < 1e-3


@pytest.mark.skipif(not SAMPLE.exists(), reason="sample_data/countries.geojson missing")
@pytest.mark.parametrize("distance", [500.0, -500.0])
def test_countries_fiji_antarctica_russia(distance: float) -> None:
    countries = gpd.read_file(SAMPLE)
    result = buffer(countries, params(distance=distance, unit="m"))
    out = result.gdf
    assert out.is_valid.all()
    # Russia, Canada, Antarctica are far too big for one projection: their boundaries go piecewise
    assert result.metadata["max_scale_error"] < 1.01e-3
    b = out.total_bounds
    assert -180 <= b[0] and b[2] <= 180 and -90 <= b[1] and b[3] <= 90
    before = countries.set_index("name").geometry
    after = out.set_index("name").geometry
    for name in ["Fiji", "Antarctica", "Russia", "France", "Chile"]:
        g0, g1 = before[name], after[name]
        inner, outer = (g0, g1) if distance > 0 else (g1, g0)
        assert shapely.difference(inner, outer).area < 1e-9, name  # grown/eroded, never the other way
        assert (geodesic_area(g1) > geodesic_area(g0)) == (distance > 0), name
    assert after["Antarctica"].bounds[1] == -90  # still reaches the pole
