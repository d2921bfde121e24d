"""Readers: every bad input gets a precise 4xx error; good input keeps types and full precision."""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import pyogrio
import pyogrio.raw
import pytest
import shapely
from pyproj import CRS

from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS, UnknownCRS
from geoservice.errors import GeoserviceError, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from geoservice.fileio.readers import ReadResult, read_feature_collection, read_upload

SQUARE = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
LIMIT = 50 * 1024 * 1024


def feature(geometry: Any, /, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def polygon(rings: Any = SQUARE) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": rings}


def collection(*features: Any, **members: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features), **members}


def four_then(bad: dict[str, Any]) -> dict[str, Any]:
    """A collection whose feature 3 (0-based) is ``bad``."""
    return collection(*[feature(polygon(), n=i) for i in range(3)], bad)


def raises(exc_type: type[GeoserviceError], call: Any, *args: Any, **kwargs: Any) -> GeoserviceError:
    with pytest.raises(exc_type) as info:
        call(*args, **kwargs)
    assert type(info.value) is exc_type
    return info.value


def upload(path: Path, name: str | None = None, **kwargs: Any) -> ReadResult:
    kwargs.setdefault("max_unpacked_bytes", LIMIT)
    return read_upload(path, name or path.name, **kwargs)


# ---------------------------------------------------------------------- read_feature_collection: good


def test_reads_features_properties_and_crs84_by_default() -> None:
    body = collection(
        feature({"type": "Point", "coordinates": [1.5, 2]}, name="a", n=1, x=0.5, ok=True, tags=["t"], meta={"k": 1}),
        feature({"type": "Point", "coordinates": [3, 4]}, name=None, n=None, x=2, ok=None, tags=None, meta=None),
    )
    body["features"][0]["id"] = "ignored"
    result = read_feature_collection(body, crs=None)
    gdf = result.gdf
    assert result.source_format == "geojson" and result.layer is None and result.warnings == []
    assert gdf.crs == CRS.from_user_input("OGC:CRS84")
    assert gdf.geometry.name == "geometry" and list(gdf.index) == [0, 1]
    assert list(gdf.columns) == ["name", "n", "x", "ok", "tags", "meta", "geometry"]
    assert gdf["n"].dtype == "Int64" and gdf["n"].tolist() == [1, pd.NA]
    assert gdf["x"].dtype == np.float64 and gdf["ok"].dtype == "boolean"
    assert gdf["name"].iloc[0] == "a" and pd.isna(gdf["name"].iloc[1])
    assert gdf["tags"].iloc[0] == ["t"] and gdf["meta"].iloc[0] == {"k": 1} and gdf["meta"].iloc[1] is None
    assert "id" not in gdf.columns


def test_integer_and_boolean_columns_without_nulls_stay_numpy() -> None:
    gdf = read_feature_collection(
        collection(feature(polygon(), n=1, ok=True), feature(polygon(), n=2**62, ok=False)), crs=None
    ).gdf
    assert gdf["n"].dtype == np.int64 and gdf["n"].tolist() == [1, 2**62]
    assert gdf["ok"].dtype == bool


def test_mixed_value_types_become_an_object_column() -> None:
    gdf = read_feature_collection(collection(feature(polygon(), v=1), feature(polygon(), v="one")), crs=None).gdf
    assert gdf["v"].dtype == object and gdf["v"].tolist() == [1, "one"]


def test_property_named_geometry_is_renamed_with_a_warning() -> None:
    result = read_feature_collection(collection(feature(polygon(), geometry="x")), crs=None)
    assert result.gdf["geometry_1"].tolist() == ["x"]
    assert result.warnings == ["property 'geometry' was renamed to 'geometry_1' (the name is reserved)"]


def test_coordinates_keep_full_precision() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.uniform(-180, 180, 60), [0.1 + 0.2, 1 / 3, 5e-324, 1e300, -0.0]])
    xs, ys = values, values[::-1]
    ring = [[float(x), float(y)] for x, y in zip(xs[:20], ys[:20], strict=True)]
    ring.append(ring[0])
    geometries = [
        {"type": "Point", "coordinates": [float(xs[0]), float(ys[0]), float(xs[1])]},
        {"type": "LineString", "coordinates": ring[:5]},
        {"type": "Polygon", "coordinates": [ring]},
        {"type": "MultiPolygon", "coordinates": [[ring], [ring]]},
        {"type": "MultiPoint", "coordinates": ring[:3]},
        {"type": "MultiLineString", "coordinates": [ring[:3], ring[3:7]]},
        {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": ring[0]}]},
    ]
    gdf = read_feature_collection(collection(*[feature(g) for g in geometries]), crs=None).gdf
    for geometry, expected in zip(gdf.geometry, geometries, strict=True):
        written = json.loads(shapely.to_geojson(geometry))
        assert written == expected
    point = shapely.get_coordinates(gdf.geometry.iloc[0], include_z=True)[0]
    assert point.tobytes() == np.array([xs[0], ys[0], xs[1]]).tobytes()  # bit for bit, sign of zero too
    assert np.signbit(shapely.get_coordinates(gdf.geometry.iloc[2])[:, 0]).any() == np.signbit(xs[:20]).any()


def test_empty_geometries_are_parsed_for_validation_to_report() -> None:
    gdf = read_feature_collection(
        collection(feature({"type": "Point", "coordinates": []}), feature({"type": "MultiPolygon", "coordinates": []})),
        crs=None,
    ).gdf
    assert gdf.geometry.is_empty.tolist() == [True, True]


def test_old_style_crs_member_is_honoured() -> None:
    body = collection(feature(polygon()), crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2263"}})
    assert read_feature_collection(body, crs=None).gdf.crs.to_epsg() == 2263
    assert read_feature_collection(body, crs="EPSG:2263").gdf.crs.to_epsg() == 2263
    legacy = collection(feature(polygon()), crs={"type": "EPSG", "properties": {"code": 32633}})
    assert read_feature_collection(legacy, crs=None).gdf.crs.to_epsg() == 32633


def test_explicit_crs_applies_when_there_is_no_member() -> None:
    assert read_feature_collection(collection(feature(polygon())), crs="EPSG:2263").gdf.crs.to_epsg() == 2263


def test_conflicting_crs_member_and_parameter_is_refused() -> None:
    body = collection(feature(polygon()), crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2263"}})
    error = raises(InvalidInput, read_feature_collection, body, crs="EPSG:4326")
    assert error.status_code == 422 and error.field == "crs"
    assert error.detail == (
        "crs: the GeoJSON declares EPSG:2263 but crs='EPSG:4326' was given; "
        "omit crs or fix the file (coordinates are never reinterpreted)"
    )


def test_crs84_member_and_epsg_4326_parameter_agree() -> None:
    body = collection(feature(polygon()), crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}})
    assert read_feature_collection(body, crs="EPSG:4326").gdf.crs.to_string() == "OGC:CRS84"


@pytest.mark.parametrize(
    "member",
    [{"type": "link", "properties": {"href": "http://x"}}, "EPSG:4326", {"type": "name", "properties": {}}],
)
def test_unsupported_crs_member(member: Any) -> None:
    error = raises(UnknownCRS, read_feature_collection, collection(feature(polygon()), crs=member), crs=None)
    assert error.status_code == 422 and error.field == "crs" and "unsupported crs member" in error.detail


def test_unknown_crs() -> None:
    error = raises(UnknownCRS, read_feature_collection, collection(feature(polygon())), crs="EPSG:999999")
    assert error.field == "crs" and error.status_code == 422 and "999999" in error.detail
    body = collection(feature(polygon()), crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::999999"}})
    assert raises(UnknownCRS, read_feature_collection, body, crs=None).field == "crs"


# ----------------------------------------------------------------------- read_feature_collection: bad


def test_wrong_type() -> None:
    error = raises(InvalidInput, read_feature_collection, feature(polygon()), crs=None)
    assert (error.status_code, error.field, error.feature) == (422, "type", None)
    assert error.detail == "type: expected 'FeatureCollection', got 'Feature'"
    assert error.to_dict() == {"error": "InvalidInput", "detail": error.detail, "field": "type"}


def test_not_an_object() -> None:
    error = raises(InvalidInput, read_feature_collection, [1, 2], crs=None)
    assert error.detail == "expected a GeoJSON FeatureCollection object, got array"


@pytest.mark.parametrize(
    ("features", "detail"),
    [
        (None, "features: expected an array of Features, got nothing"),
        ({}, "features: expected an array of Features, got object"),
    ],
)
def test_features_missing_or_not_a_list(features: Any, detail: str) -> None:
    body = {"type": "FeatureCollection"} if features is None else {"type": "FeatureCollection", "features": features}
    error = raises(InvalidInput, read_feature_collection, body, crs=None)
    assert (error.field, error.detail) == ("features", detail)


def test_empty_feature_collection() -> None:
    error = raises(EmptyInput, read_feature_collection, collection(), crs=None)
    assert (error.status_code, error.code, error.field) == (422, "EmptyInput", "features")
    assert error.detail == "features: the FeatureCollection has no features"


@pytest.mark.parametrize(
    ("bad", "field", "detail", "exc_type"),
    [
        ("x", "features[3]", "features[3]: expected a Feature object, got string", InvalidInput),
        ({"type": "Polygon"}, "features[3].type", "features[3].type: expected 'Feature', got 'Polygon'", InvalidInput),
        (
            {"type": "Feature", "geometry": polygon(), "properties": [1]},
            "features[3].properties",
            "features[3].properties: expected an object or null, got array",
            InvalidInput,
        ),
        (
            {"type": "Feature", "properties": {}},
            "features[3].geometry",
            "features[3].geometry: missing",
            InvalidGeometry,
        ),
        (feature(None), "features[3].geometry", "features[3].geometry: null geometry", InvalidGeometry),
    ],
)
def test_bad_feature(bad: Any, field: str, detail: str, exc_type: type[GeoserviceError]) -> None:
    error = raises(exc_type, read_feature_collection, four_then(bad), crs=None)
    assert (error.status_code, error.field, error.feature, error.detail) == (422, field, 3, detail)


@pytest.mark.parametrize(
    ("geometry", "detail"),
    [
        (
            polygon([[[0, 0], [1, 0], [1, 1], [1, 0]]]),
            "ring 0 of polygon is not closed (first [0,0] != last [1,0])",
        ),
        (polygon([[[0, 0], [1, 0], [0, 0]]]), "ring 0 of polygon has 3 positions (a closed ring needs at least 4)"),
        (
            {"type": "MultiPolygon", "coordinates": [[SQUARE[0]], [SQUARE[0], [[0, 0], [1, 1], [2, 0], [0, 1]]]]},
            "ring 1 of polygon 1 is not closed (first [0,0] != last [0,1])",
        ),
        (
            polygon([[[0, 0], [1, 0], [1, float("nan")], [0, 0]]]),
            "position 2 of ring 0 of polygon has a non-finite coordinate (nan)",
        ),
        ({"type": "Point", "coordinates": [1, "a"]}, 'position has a non-numeric coordinate "a"'),
        ({"type": "Point", "coordinates": [1, "2.5"]}, 'position has a non-numeric coordinate "2.5"'),
        ({"type": "Point", "coordinates": [True, 2.5]}, "position has a non-numeric coordinate true"),
        ({"type": "Point", "coordinates": [None, 2.5]}, "position has a non-numeric coordinate null"),
        ({"type": "Point", "coordinates": [1]}, "position has 1 number (expected [x, y] or [x, y, z])"),
        ({"type": "Point", "coordinates": [1, 2, 3, 4]}, "position has 4 numbers (expected [x, y] or [x, y, z])"),
        ({"type": "Point", "coordinates": 5}, "position is a JSON number (expected [x, y] or [x, y, z])"),
        ({"type": "Point", "coordinates": [2**70, 1]}, f"position has an out-of-range coordinate ({2**70})"),
        ({"type": "LineString", "coordinates": [[0, 0]]}, "the line has 1 position (a line needs at least 2)"),
        (
            {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2]]]},
            "line 1 has 1 position (a line needs at least 2)",
        ),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1, 1]]}, "positions mix 2 and 3 dimensions"),
        ({"type": "Polygon", "coordinates": {"a": 1}}, "coordinates: expected an array of rings, got object"),
        ({"type": "Circle", "coordinates": [0, 0]}, "unknown geometry type 'Circle'"),
        ({"type": ["Point"], "coordinates": [0, 0]}, "unknown geometry type ['Point']"),
        ({"type": "Polygon"}, "Polygon has no 'coordinates'"),
        ("POINT (1 2)", "expected a geometry object, got string"),
    ],
)
def test_bad_geometry(geometry: Any, detail: str) -> None:
    error = raises(InvalidGeometry, read_feature_collection, four_then(feature(geometry)), crs=None)
    assert (error.status_code, error.code) == (422, "InvalidGeometry")
    assert (error.field, error.feature) == ("features[3].geometry", 3)
    assert error.detail == f"features[3].geometry: {detail}"


def test_infinite_coordinate_from_python_json() -> None:
    body = json.loads(
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[1e999,0]}}]}'
    )
    error = raises(InvalidGeometry, read_feature_collection, body, crs=None)
    assert error.detail == "features[0].geometry: position has a non-finite coordinate (inf)"
    assert (error.field, error.feature) == ("features[0].geometry", 0)


def test_error_inside_a_geometry_collection_names_the_member() -> None:
    bad = {
        "type": "GeometryCollection",
        "geometries": [{"type": "Point", "coordinates": [0, 0]}, polygon([[[0, 0], [1, 0], [1, 1], [2, 2]]])],
    }
    error = raises(InvalidGeometry, read_feature_collection, four_then(feature(bad)), crs=None)
    assert error.detail == (
        "features[3].geometry.geometries[1]: ring 0 of polygon is not closed (first [0,0] != last [2,2])"
    )
    assert error.field == "features[3].geometry"


# ------------------------------------------------------------------------------- uploads: GeoJSON


def test_geojson_upload(tmp_path: Path) -> None:
    body = collection(feature(polygon(), name="é"), crs={"type": "name", "properties": {"name": "EPSG:32633"}})
    path = tmp_path / "up.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(body))
    result = upload(path)
    assert result.source_format == "geojson" and result.gdf.crs.to_epsg() == 32633
    assert result.gdf["name"].tolist() == ["é"]


def test_truncated_geojson_upload(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_bytes(orjson.dumps(collection(feature(polygon())))[:-7])
    error = raises(InvalidInput, upload, path)
    assert (error.status_code, error.field) == (422, "file")
    assert error.detail.startswith("could not read cut.json as GeoJSON: ")


def test_geojson_upload_with_an_unclosed_ring(tmp_path: Path) -> None:
    path = tmp_path / "open.geojson"
    path.write_bytes(orjson.dumps(four_then(feature(polygon([[[0, 0], [1, 0], [1, 1], [1, 0]]])))))
    error = raises(InvalidGeometry, upload, path)
    assert (error.field, error.feature) == ("features[3].geometry", 3)
    assert "ring 0 of polygon is not closed" in error.detail


def test_geojson_text_sequence_upload(tmp_path: Path) -> None:
    path = tmp_path / "seq.geojsonl"
    records = [orjson.dumps(feature({"type": "Point", "coordinates": [i, i]}, i=i)) for i in range(3)]
    path.write_bytes(b"".join(b"\x1e" + r + b"\n" for r in records))
    result = upload(path)
    assert result.source_format == "geojsonseq" and result.gdf["i"].tolist() == [0, 1, 2]
    path.write_bytes(b"\x1e" + records[0] + b"\n\x1e{oops\n")
    assert "record 1: " in raises(InvalidInput, upload, path).detail


# ------------------------------------------------------------------------------ uploads: sniffing


def test_upload_sniffing_errors(tmp_path: Path) -> None:
    odd = tmp_path / "data.bin"
    odd.write_bytes(b"\x00\x01binary")
    error = raises(UnsupportedMediaType, upload, odd)
    assert (error.status_code, error.field) == (415, "file")
    shp = tmp_path / "roads.shp"
    shp.write_bytes(b"\x00\x00\x27\x0a")
    assert "upload a Shapefile as one .zip" in raises(UnsupportedMediaType, upload, shp).detail
    empty = tmp_path / "empty.geojson"
    empty.write_bytes(b"")
    assert raises(InvalidInput, upload, empty).detail == "empty.geojson is empty"
    fake = tmp_path / "fake.gpkg"
    fake.write_bytes(b'{"type": "FeatureCollection"}')
    assert (
        raises(InvalidInput, upload, fake).detail == "fake.gpkg is not a GeoPackage file (its content does not match)"
    )


def test_magic_bytes_decide_when_the_extension_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(orjson.dumps(collection(feature(polygon()))))
    assert upload(path, "blob.dat").source_format == "geojson"


def test_options_that_do_not_apply(tmp_path: Path) -> None:
    path = tmp_path / "a.geojson"
    path.write_bytes(orjson.dumps(collection(feature(polygon()))))
    error = raises(InvalidInput, upload, path, layer="x")
    assert (error.field, error.detail) == ("layer", "layer does not apply to a GeoJSON upload")


# ----------------------------------------------------------------------------- uploads: GeoPackage


def sample(crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"name": ["a", None], "n": [1, 2]}, geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)], crs=crs
    )


def test_geopackage_with_two_layers_needs_a_layer(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    pyogrio.write_dataframe(sample(), path, layer="roads")
    pyogrio.write_dataframe(sample(), path, layer="rivers")
    error = raises(InvalidInput, upload, path)
    assert (error.status_code, error.field) == (422, "layer")
    assert error.detail == "two.gpkg has 2 layers; choose one with layer: 'roads', 'rivers'"
    assert error.to_dict()["layers"] == ["roads", "rivers"]
    result = upload(path, layer="rivers")
    assert (result.layer, result.source_format, len(result.gdf)) == ("rivers", "gpkg", 2)
    unknown = raises(InvalidInput, upload, path, layer="lakes")
    assert unknown.detail == "layer 'lakes' is not in two.gpkg; its layers: 'roads', 'rivers'"


def test_truncated_geopackage(tmp_path: Path) -> None:
    whole = tmp_path / "whole.gpkg"
    pyogrio.write_dataframe(sample(), whole, layer="a")
    cut = tmp_path / "cut.gpkg"
    cut.write_bytes(whole.read_bytes()[:4096])
    error = raises(InvalidInput, upload, cut)
    assert (error.status_code, error.field) == (422, "file")
    assert error.detail.startswith("could not read cut.gpkg as GeoPackage: ")
    assert str(tmp_path) not in error.detail


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_geopackage_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.gpkg"
    pyogrio.write_dataframe(sample(crs=None), path, layer="a")
    error = raises(MissingCRS, upload, path)
    assert (error.status_code, error.field) == (422, "crs")
    assert error.detail == "nocrs.gpkg (layer 'a') has no CRS; pass crs (for example crs=EPSG:4326)"
    assert upload(path, crs="EPSG:2263").gdf.crs.to_epsg() == 2263


def test_geopackage_crs_conflict(tmp_path: Path) -> None:
    path = tmp_path / "utm.gpkg"
    pyogrio.write_dataframe(sample("EPSG:32633"), path, layer="a")
    assert upload(path, crs="EPSG:32633").gdf.crs.to_epsg() == 32633
    error = raises(InvalidInput, upload, path, crs="EPSG:4326")
    assert error.field == "crs" and "declares EPSG:32633 but crs='EPSG:4326' was given" in error.detail


def test_geopackage_with_an_unclosed_ring_names_the_feature(tmp_path: Path) -> None:
    def polygon_wkb(ring: list[tuple[float, float]]) -> bytes:
        points = b"".join(struct.pack("<dd", *p) for p in ring)
        return struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + points

    geometry = np.array(
        [polygon_wkb([(0, 0), (1, 0), (1, 1), (0, 0)]), polygon_wkb([(0, 0), (1, 0), (1, 1), (0, 1)])], dtype=object
    )
    path = tmp_path / "open.gpkg"
    pyogrio.raw.write(path, geometry, [], [], layer="a", driver="GPKG", geometry_type="Polygon", crs="EPSG:4326")
    error = raises(InvalidGeometry, upload, path)
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail.startswith("features[1].geometry: invalid geometry: ")
    assert "closed" in error.detail


def test_flatgeobuf_upload(tmp_path: Path) -> None:
    path = tmp_path / "a.fgb"
    pyogrio.write_dataframe(sample("EPSG:32633"), path, layer="a", SPATIAL_INDEX="NO")
    result = upload(path)
    assert (result.source_format, result.layer, result.gdf.crs.to_epsg()) == ("fgb", "a", 32633)
    assert result.gdf["n"].tolist() == [1, 2]


# ------------------------------------------------------------------------------- uploads: zips


def shapefile_zip(
    tmp_path: Path, name: str = "roads", *, prj: bool = True, extra: dict[str, bytes] | None = None
) -> Path:
    folder = tmp_path / f"{name}_src"
    folder.mkdir()
    pyogrio.write_dataframe(sample("EPSG:32633"), folder / f"{name}.shp")
    path = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.iterdir()):
            if prj or file.suffix != ".prj":
                zf.write(file, arcname=file.name)
        for arcname, data in (extra or {}).items():
            zf.writestr(arcname, data)
    return path


def test_zipped_shapefile(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path, extra={"__MACOSX/._roads.shp": b"junk", "readme.txt": b"hi"})
    result = upload(path)
    assert (result.source_format, result.layer, result.gdf.crs.to_epsg()) == ("shp", "roads", 32633)
    assert result.gdf["n"].tolist() == [1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unzip-")]  # extraction dir removed


def test_zipped_shapefile_without_prj(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path, prj=False)
    error = raises(MissingCRS, upload, path)
    assert (error.status_code, error.field) == (422, "crs")
    assert error.detail == "roads.zip has no CRS (no .prj file in the zip); pass crs (for example crs=EPSG:4326)"
    assert upload(path, crs="EPSG:32633").gdf.crs.to_epsg() == 32633


def test_zip_with_several_shapefiles(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path)
    with zipfile.ZipFile(path, "a") as zf:
        for entry in list(zf.namelist()):
            zf.writestr(entry.replace("roads", "data/rivers"), zf.read(entry))
    error = raises(InvalidInput, upload, path)
    assert (error.field, error.to_dict()["layers"]) == ("layer", ["data/rivers", "roads"])
    assert error.detail == "roads.zip holds 2 Shapefiles; choose one with layer: 'data/rivers', 'roads'"
    assert upload(path, layer="rivers").layer == "data/rivers"
    assert "is not a Shapefile in roads.zip" in raises(InvalidInput, upload, path, layer="lakes").detail


def test_zip_entry_escaping_its_folder(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path, extra={"../evil.shp": b"x"})
    error = raises(InvalidInput, upload, path)
    assert (error.status_code, error.field) == (422, "file")
    assert error.detail == "roads.zip: zip entry '../evil.shp' escapes the archive folder"
    absolute = shapefile_zip(tmp_path, "abs", extra={"/etc/cron.d/evil": b"x"})
    assert "'/etc/cron.d/evil' escapes" in raises(InvalidInput, upload, absolute).detail
    assert not (tmp_path.parent / "evil.shp").exists()


def test_zip_bomb_is_refused_before_extraction(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, zf.open("roads.shp.xml", "w") as out:
        for _ in range(8):
            out.write(bytes(1 << 20))  # 8 MiB of zeros: about 8 KiB compressed
    error = raises(InvalidInput, upload, path)
    assert (error.status_code, error.field) == (422, "file")
    assert error.detail.startswith("roads.zip: zip bomb suspected: entry 'roads.shp.xml' expands ")
    assert error.detail.endswith("x (limit 100x)")
    ratio = int(error.detail.split("expands ")[1].split("x")[0])
    assert ratio > 100
    too_big = raises(PayloadTooLarge, upload, path, max_unpacked_bytes=1 << 20)
    assert (too_big.status_code, too_big.field) == (413, "file")
    assert too_big.detail.startswith("roads.zip expands to ") and too_big.detail.endswith(
        "bytes, over the limit of 1048576 bytes"
    )


def test_truncated_zip(tmp_path: Path) -> None:
    path = shapefile_zip(tmp_path)
    path.write_bytes(path.read_bytes()[:300])
    error = raises(InvalidInput, upload, path)
    assert (error.status_code, error.field) == (422, "file")
    assert error.detail == "roads.zip: upload is not a valid zip archive (truncated?)"


def test_zip_without_a_shapefile_or_with_parts_missing(tmp_path: Path) -> None:
    path = tmp_path / "docs.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", "x")
    assert raises(InvalidInput, upload, path).detail == "docs.zip holds no .shp file (it has: a.txt)"
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr("roads.shp", "x")
        zf.writestr("roads.shx", "x")
    error = raises(InvalidInput, upload, partial)
    assert error.detail == "partial.zip: roads.shp has no .dbf file (a Shapefile needs .shp, .shx and .dbf)"


# -------------------------------------------------------------------------------------- uploads: CSV


def write_csv(tmp_path: Path, text: str, name: str = "points.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_needs_a_crs(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "lon,lat\n1,2\n")
    error = raises(MissingCRS, upload, path)
    assert (error.status_code, error.code, error.field) == (422, "MissingCRS", "crs")
    assert error.detail == "points.csv: a CSV file has no CRS; pass crs (for example crs=EPSG:4326 for lon/lat degrees)"


def test_csv_lon_lat_columns_are_detected_case_insensitively(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "id;Name;LONGITUDE;Lat\n1;a;0.30000000000000004;1e-300\n2;b;-73.98;40.75\n")
    result = upload(path, crs="EPSG:4326")
    assert result.source_format == "csv" and list(result.gdf.columns) == ["id", "Name", "geometry"]
    coords = shapely.get_coordinates(result.gdf.geometry)
    assert coords.tolist() == [[0.1 + 0.2, 1e-300], [-73.98, 40.75]]
    assert result.gdf.crs.to_epsg() == 4326


def test_csv_wkt_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'id,WKT\n1,"POLYGON ((0 0, 1 0, 1 1, 0 0))"\n2,"POINT (1 2)"\n')
    result = upload(path, crs="EPSG:2263")
    assert result.gdf.geometry.geom_type.tolist() == ["Polygon", "Point"]
    assert list(result.gdf.columns) == ["id", "geometry"]


def test_csv_explicit_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "e,n,x\n500000,4649776.22,7\n")
    result = upload(path, crs="EPSG:32633", x_field="e", y_field="n")
    assert shapely.get_coordinates(result.gdf.geometry).tolist() == [[500000.0, 4649776.22]]
    assert result.gdf["x"].tolist() == [7]


def test_csv_errors(tmp_path: Path) -> None:
    bad_wkt = write_csv(tmp_path, 'id,wkt\n1,"POINT (1 2)"\n2,"POLYGON ((0 0, 1 0, 1 1, 0 1))"\n', "w.csv")
    error = raises(InvalidGeometry, upload, bad_wkt, crs="EPSG:4326")
    assert (error.field, error.feature) == ("features[1].geometry", 1)
    assert error.detail.startswith("features[1].geometry: WKT in column 'wkt' could not be parsed: ")
    bad_number = write_csv(tmp_path, "lon,lat\n1,2\nabc,3\n", "n.csv")
    error = raises(InvalidGeometry, upload, bad_number, crs="EPSG:4326")
    assert error.detail == "features[1].geometry: column 'lon' value 'abc' is not a number"
    empty_cell = write_csv(tmp_path, "lon,lat\n1,2\n3,\n", "e.csv")
    assert raises(InvalidGeometry, upload, empty_cell, crs="EPSG:4326").detail == (
        "features[1].geometry: no coordinates (column 'lat' is empty)"
    )
    no_geometry = write_csv(tmp_path, "a,b\n1,2\n", "g.csv")
    error = raises(InvalidInput, upload, no_geometry, crs="EPSG:4326")
    assert error.detail == "g.csv: no geometry column found; pass wkt_field, or x_field and y_field (columns: 'a', 'b')"
    assert raises(InvalidInput, upload, no_geometry, crs="EPSG:4326", wkt_field="shape").field == "wkt_field"
    assert raises(InvalidInput, upload, no_geometry, crs="EPSG:4326", x_field="a").field == "y_field"
    assert raises(UnknownCRS, upload, no_geometry, crs="nonsense").field == "crs"


def test_csv_header_only(tmp_path: Path) -> None:
    error = raises(EmptyInput, upload, write_csv(tmp_path, "lon,lat\n"), crs="EPSG:4326")
    assert error.detail == "points.csv has no rows"


def test_non_finite_is_never_written_as_json(tmp_path: Path) -> None:
    # orjson refuses NaN literals, so a GeoJSON upload can never carry them
    path = tmp_path / "nan.geojson"
    path.write_text(
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Point","coordinates":[NaN,1]}}]}'
    )
    assert raises(InvalidInput, upload, path).detail.startswith("could not read nan.geojson as GeoJSON")
    assert math.isnan(json.loads("NaN"))
