"""validate_geometries / geometry_family: each problem named by feature, field and count; repairs listed."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS
from geoservice.analysis.validation import geometry_family, validate_geometries

BOWTIE = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
SQUARE = shapely.box(0, 0, 1, 1)


def layer(*geometries: Any, crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"n": range(len(geometries))}, geometry=list(geometries), crs=crs)


def refused(gdf: gpd.GeoDataFrame, **kwargs: Any) -> InvalidGeometry:
    kwargs.setdefault("make_valid", False)
    with pytest.raises(InvalidGeometry) as info:
        validate_geometries(gdf, **kwargs)
    error = info.value
    assert (error.status_code, error.code) == (422, "InvalidGeometry")
    return error


def test_valid_layer_passes_unchanged() -> None:
    gdf = layer(SQUARE, shapely.MultiPolygon([shapely.box(2, 2, 3, 3)]), crs="EPSG:32633")
    result, repaired = validate_geometries(gdf, make_valid=True)
    assert result is gdf and repaired == []


def test_null_geometry() -> None:
    error = refused(layer(SQUARE, None, SQUARE, None))
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail == "features[1].geometry: null geometry (and 1 more)"


def test_empty_geometry() -> None:
    error = refused(layer(SQUARE, SQUARE, shapely.Polygon()))
    assert (error.field, error.feature, error.detail) == (
        "features[2].geometry",
        2,
        "features[2].geometry: empty geometry",
    )


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_coordinate() -> None:
    bad = shapely.Polygon([(0, 0), (1, np.nan), (1, 1), (0, 0)])
    error = refused(layer(SQUARE, bad, shapely.Point(np.nan, 0)))
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail == "features[1].geometry: non-finite coordinate (1.0, nan) (and 1 more)"


def test_infinite_coordinate() -> None:
    error = refused(layer(shapely.Point(0, 0), shapely.Point(np.inf, 0), crs="EPSG:32633"))
    assert error.detail == "features[1].geometry: non-finite coordinate (inf, 0.0)"


def test_non_finite_z() -> None:
    error = refused(layer(shapely.Point(0, 0, 1), shapely.Point(0, 0, np.nan), crs="EPSG:32633"))
    assert error.detail == "features[1].geometry: non-finite coordinate (0.0, 0.0, nan)"
    assert error.feature == 1


def test_latitude_beyond_90_in_a_geographic_crs() -> None:
    error = refused(layer(shapely.Point(10, 45), shapely.Point(10, 91), shapely.Point(10, -95)))
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert (
        error.detail == "features[1].geometry: latitude 91.0 is beyond ±90 (EPSG:4326 is a geographic CRS) (and 1 more)"
    )


def test_longitude_beyond_540() -> None:
    error = refused(layer(shapely.Point(541, 0), crs="OGC:CRS84"))
    assert error.detail == "features[0].geometry: longitude 541.0 is beyond ±540 (OGC:CRS84 is a geographic CRS)"
    validate_geometries(layer(shapely.Point(190, 0)), make_valid=False)  # across the antimeridian: fine


def test_projected_crs_has_no_latitude_limit() -> None:
    validate_geometries(layer(shapely.Point(500_000, 4_500_000), crs="EPSG:32633"), make_valid=False)


def test_mixed_geometry_families() -> None:
    error = refused(layer(shapely.Point(0, 0), shapely.Point(1, 1), SQUARE, shapely.LineString([(0, 0), (1, 1)])))
    assert (error.field, error.feature) == ("features[2].geometry", 2)
    assert error.detail == (
        "features[2].geometry: mixed geometry types (2 Point, 1 LineString, 1 Polygon); "
        "a layer holds one family: points, lines or polygons (and 1 more)"
    )


def test_single_and_multi_of_one_family_mix() -> None:
    validate_geometries(layer(shapely.Point(0, 0), shapely.MultiPoint([(1, 1), (2, 2)])), make_valid=False)


def test_geometry_collection_is_refused() -> None:
    error = refused(layer(SQUARE, shapely.GeometryCollection([shapely.Point(0, 0), SQUARE])))
    assert error.detail == "features[1].geometry: mixed geometry collection (GeometryCollection is not supported)"
    assert error.feature == 1


def test_self_intersection_is_refused_without_make_valid() -> None:
    error = refused(layer(SQUARE, BOWTIE, shapely.MultiPolygon([BOWTIE])))
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail == (
        "features[1].geometry: invalid geometry: Self-intersection[1 1] (and 1 more); pass make_valid=true to repair"
    )


def test_make_valid_repairs_and_reports() -> None:
    gdf = layer(SQUARE, BOWTIE, shapely.MultiPolygon([BOWTIE]), crs="EPSG:32633")
    result, repaired = validate_geometries(gdf, make_valid=True)
    assert repaired == [
        {"feature": 1, "problem": "Self-intersection[1 1]"},
        {"feature": 2, "problem": "Self-intersection[1 1]"},
    ]
    assert result.geometry.is_valid.all()
    assert result.geometry.geom_type.tolist() == ["Polygon", "MultiPolygon", "MultiPolygon"]
    assert result.geometry.iloc[1].area == pytest.approx(2.0)
    assert result.geometry.iloc[0] is gdf.geometry.iloc[0]
    assert gdf.geometry.iloc[1].equals(BOWTIE)  # the input is not modified
    assert result["n"].tolist() == [0, 1, 2] and result.crs == gdf.crs


def test_repair_drops_collapsed_parts_of_another_family() -> None:
    # a polygon with a dangling spike: the repair would produce a polygon plus a line
    spike = shapely.Polygon([(0, 0), (2, 0), (2, 2), (0, 2), (0, 0), (-1, -1), (0, 0)])
    result, repaired = validate_geometries(layer(spike), make_valid=True)
    assert repaired[0]["feature"] == 0
    assert result.geometry.iloc[0].geom_type in ("Polygon", "MultiPolygon")
    assert result.geometry.iloc[0].area == pytest.approx(4.0)


def test_repair_that_leaves_nothing_is_refused() -> None:
    flat = shapely.Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])
    error = refused(layer(SQUARE, flat), make_valid=True)
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail.startswith("features[1].geometry: invalid geometry (")
    assert error.detail.endswith(") cannot be repaired: nothing of its type is left")


def test_feature_labels_name_the_features() -> None:
    gdf = layer(SQUARE, BOWTIE)
    error = refused(gdf, feature_labels=[101, 205])
    assert (error.field, error.feature) == ("features[205].geometry", 205)
    _, repaired = validate_geometries(gdf, make_valid=True, feature_labels=["a", "b"])
    assert repaired == [{"feature": "b", "problem": "Self-intersection[1 1]"}]
    with pytest.raises(ValueError, match="1 labels for 2 features"):
        validate_geometries(gdf, make_valid=False, feature_labels=[1])


def test_checks_run_in_order() -> None:
    # a null geometry is reported before the invalid one that comes first
    error = refused(layer(BOWTIE, None))
    assert error.detail == "features[1].geometry: null geometry"


def test_missing_crs() -> None:
    with pytest.raises(MissingCRS) as info:
        validate_geometries(layer(SQUARE, crs=None), make_valid=False)
    assert (info.value.status_code, info.value.field) == (422, "crs")


def test_geometry_family() -> None:
    assert geometry_family(layer(shapely.Point(0, 0), None)) == "Point"
    assert geometry_family(layer(shapely.Point(0, 0), shapely.MultiPoint([(1, 1)]))) == "MultiPoint"
    assert geometry_family(layer(SQUARE, shapely.MultiPolygon([SQUARE]))) == "MultiPolygon"
    assert geometry_family(layer(shapely.LineString([(0, 0), (1, 1)]), shapely.LinearRing(SQUARE.exterior))) == (
        "LineString"
    )
    with pytest.raises(EmptyInput):
        geometry_family(layer(None, shapely.Polygon()))
    with pytest.raises(InvalidGeometry) as info:
        geometry_family(layer(None, shapely.Point(0, 0), SQUARE))
    assert info.value.feature == 2
