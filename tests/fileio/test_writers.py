"""Writers: streamed GeoJSON and files that read back identical, coordinate for coordinate."""

from __future__ import annotations

import datetime as dt
import decimal
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS

from geoservice.analysis.errors import UnsupportedGeometryType
from geoservice.fileio.readers import read_feature_collection, read_upload
from geoservice.fileio.writers import (
    EXPORT_FORMATS,
    geojson_crs_member,
    geojson_feature_bytes,
    stream_geojson,
    stream_geojsonseq,
    write_file,
)

LIMIT = 50 * 1024 * 1024
IDS = [3, 4, 5, 9, 10, 11, 40, 41, 1000]


def dataset(crs: str) -> gpd.GeoDataFrame:
    """Polygons and multipolygons with arbitrary doubles and attributes of every kind, including nulls."""
    rng = np.random.default_rng(42)
    n = len(IDS)
    if CRS.from_user_input(crs).is_geographic:
        x, y, size = rng.uniform(-179, 179, n), rng.uniform(-89, 89, n), 0.01
    else:
        x, y, size = rng.uniform(300_000, 700_000, n), rng.uniform(4e6, 5e6, n), 50.0
    shapes = list(shapely.buffer(shapely.points(x, y), size * rng.uniform(0.5, 1, n), quad_segs=3))
    shapes[1] = shapely.MultiPolygon([shapes[1], shapely.buffer(shapely.Point(x[1] + 5 * size, y[1]), size)])
    shapes[2] = shapely.MultiPolygon([shapes[2]])  # single-part multi
    return gpd.GeoDataFrame(
        {
            "count": np.arange(n, dtype=np.int64) * 10**12,
            "maybe": pd.array([1, None, 3, None, 5, 6, 7, 8, None], dtype="Int64"),
            "ratio": rng.uniform(-1e6, 1e6, n),
            "gap": [0.1, np.nan, 1 / 3, 2.5, np.nan, 1e-7, -0.0, 7.0, 8.0],
            "name": pd.array(["a", None, "é", "long text", "", "x", None, "z", "ω"], dtype="str"),
            "flag": np.array([True, False] * 4 + [True]),
        },
        geometry=shapes,
        crs=crs,
    )


def batches(gdf: gpd.GeoDataFrame, ids: list[int] = IDS, size: int = 4) -> Iterator[tuple[gpd.GeoDataFrame, list[int]]]:
    for start in range(0, len(gdf), size):
        yield gdf.iloc[start : start + size], ids[start : start + size]


def coordinates(series: gpd.GeoSeries) -> np.ndarray:
    return shapely.get_coordinates(np.asarray(series.array, dtype=object), include_z=True)


def assert_same_coordinates(actual: gpd.GeoSeries, expected: gpd.GeoSeries) -> None:
    a, e = coordinates(actual), coordinates(expected)
    assert a.shape == e.shape
    assert a.tobytes() == e.tobytes()  # bit for bit (np.array_equal would accept 0.0 == -0.0)


def assert_same_attributes(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        pd.testing.assert_series_equal(
            actual[column].reset_index(drop=True), expected[column].reset_index(drop=True), check_names=False
        )


# ------------------------------------------------------------------------------------------ GeoJSON


def test_export_formats_table() -> None:
    assert EXPORT_FORMATS["geojson"] == ("application/geo+json", ".geojson")
    assert EXPORT_FORMATS["geojsonseq"] == ("application/geo+json-seq", ".geojsonl")
    assert EXPORT_FORMATS["gpkg"] == ("application/geopackage+sqlite3", ".gpkg")
    assert EXPORT_FORMATS["shp"] == ("application/zip", ".zip")
    media_type, extension = EXPORT_FORMATS["fgb"]
    assert (media_type, extension) == ("application/flatgeobuf", ".fgb")


def test_geojson_coordinates_round_trip_at_full_precision() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.uniform(-180, 180, 500), rng.uniform(-1e7, 1e7, 500) * rng.random(500), [5e-324, 1e308, 0.1, -0.0]]
    )
    points = shapely.points(values, values[::-1], values[::3].repeat(3)[: len(values)])
    gdf = gpd.GeoDataFrame(geometry=points, crs="EPSG:4326")
    features = [orjson.loads(f) for f in geojson_feature_bytes(gdf, range(len(gdf)))]
    written = np.array([f["geometry"]["coordinates"] for f in features])
    assert written.tobytes() == coordinates(gdf.geometry).tobytes()


def test_feature_bytes_properties_and_ids() -> None:
    gdf = gpd.GeoDataFrame(
        {
            "i": np.array([1, 2], dtype=np.int32),
            "n": pd.array([1, None], dtype="Int64"),
            "f": [np.nan, 1.5],
            "s": ["x", None],
            "when": pd.to_datetime(["2024-01-02T03:04:05", None]),
            "day": [dt.date(2024, 1, 2), None],
            "money": [decimal.Decimal("1.10"), decimal.Decimal("NaN")],
            "nested": [{"a": [1, 2]}, None],
            "raw": [b"\x00\x01", None],
        },
        geometry=[shapely.Point(1, 2), None],
        crs="EPSG:4326",
    )
    first, second = geojson_feature_bytes(gdf, np.array([7, 8]))
    assert first == (
        b'{"type":"Feature","id":7,"geometry":{"type":"Point","coordinates":[1.0,2.0]},"properties":'
        b'{"i":1,"n":1,"f":null,"s":"x","when":"2024-01-02T03:04:05","day":"2024-01-02","money":1.10,'
        b'"nested":{"a":[1,2]},"raw":"AAE="}}'
    )
    assert orjson.loads(second) == {
        "type": "Feature",
        "id": 8,
        "geometry": None,
        "properties": {
            "i": 2,
            "n": None,
            "f": 1.5,
            "s": None,
            "when": None,
            "day": None,
            "money": None,
            "nested": None,
            "raw": None,
        },
    }
    with pytest.raises(ValueError, match="1 ids for 2 rows"):
        geojson_feature_bytes(gdf, [1])


def test_geojson_crs_member() -> None:
    assert geojson_crs_member("OGC:CRS84") is None
    assert geojson_crs_member("EPSG:2263") == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2263"}}
    assert geojson_crs_member(CRS.from_epsg(4326))["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326"


def test_stream_geojson_is_lazy_and_valid() -> None:
    gdf = dataset("EPSG:32633")
    consumed: list[int] = []

    def tracked() -> Iterator[tuple[gpd.GeoDataFrame, list[int]]]:
        for batch, ids in batches(gdf):
            consumed.append(len(batch))
            yield batch, ids

    stream = stream_geojson(tracked(), crs_member=geojson_crs_member(gdf.crs), extra_members={"name": "roads"})
    head = next(stream)
    assert head == (
        b'{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::32633"}},'
        b'"name":"roads","features":['
    )
    assert consumed == []
    first = next(stream)
    assert consumed == [4]
    body = head + first + b"".join(stream)
    assert consumed == [4, 4, 1] and body.endswith(b"]}")
    parsed = orjson.loads(body)
    assert [f["id"] for f in parsed["features"]] == IDS


def test_stream_geojson_without_features() -> None:
    assert orjson.loads(b"".join(stream_geojson([], crs_member=None))) == {"type": "FeatureCollection", "features": []}
    empty = dataset("EPSG:4326").iloc[:0]
    assert orjson.loads(b"".join(stream_geojson([(empty, [])], crs_member=None)))["features"] == []
    with pytest.raises(ValueError, match="reserved"):
        list(stream_geojson([], crs_member=None, extra_members={"features": []}))


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32633"])
def test_geojson_export_import_is_identical(crs: str) -> None:
    gdf = dataset(crs)
    body = b"".join(stream_geojson(batches(gdf), crs_member=geojson_crs_member(crs)))
    back = read_feature_collection(orjson.loads(body), crs=None).gdf
    assert back.crs.equals(gdf.crs)
    assert_same_coordinates(back.geometry, gdf.geometry)
    assert back.geometry.geom_type.tolist() == gdf.geometry.geom_type.tolist()
    assert_same_attributes(back, gdf, ["count", "maybe", "ratio", "gap", "name", "flag"])


def test_geojsonseq_export_import_is_identical(tmp_path: Path) -> None:
    gdf = dataset("EPSG:32633")
    chunks = list(stream_geojsonseq(batches(gdf)))
    assert len(chunks) == 3 and all(c.startswith(b"\x1e") and c.endswith(b"\n") for c in chunks)
    path = tmp_path / "out.geojsonl"
    path.write_bytes(b"".join(chunks))
    back = read_upload(path, path.name, crs="EPSG:32633", max_unpacked_bytes=LIMIT).gdf
    assert_same_coordinates(back.geometry, gdf.geometry)
    assert_same_attributes(back, gdf, ["count", "maybe", "ratio", "gap", "name", "flag"])


# ------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32633"])
def test_geopackage_round_trip(tmp_path: Path, crs: str) -> None:
    gdf = dataset(crs)
    path = write_file(batches(gdf), "gpkg", directory=tmp_path, layer_name="roads", crs=crs)
    assert path == tmp_path / "roads.gpkg" and [p.name for p in tmp_path.iterdir()] == ["roads.gpkg"]
    assert pyogrio.read_dataframe(path, fid_as_index=True).index.tolist() == IDS  # ids are the FIDs
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT)
    assert (back.layer, back.source_format) == ("roads", "gpkg")
    assert back.gdf.crs.equals(gdf.crs)
    assert_same_coordinates(back.gdf.geometry, gdf.geometry)
    assert back.gdf.geometry.geom_type.tolist() == gdf.geometry.geom_type.tolist()  # GEOMETRY layer keeps types
    assert list(back.gdf.columns) == [*gdf.columns]  # the FID is not an attribute
    assert_same_attributes(back.gdf, gdf, ["count", "maybe", "ratio", "gap", "name", "flag"])


def test_geopackage_spatial_index_matches_the_ids(tmp_path: Path) -> None:
    gdf = dataset("EPSG:32633")
    path = write_file(batches(gdf), "gpkg", directory=tmp_path, layer_name="roads", crs=gdf.crs)
    target = gdf.geometry.iloc[6]
    hits = pyogrio.read_dataframe(path, bbox=target.bounds, fid_as_index=True)
    assert IDS[6] in hits.index.tolist()


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32633"])
def test_flatgeobuf_round_trip(tmp_path: Path, crs: str) -> None:
    gdf = dataset(crs)
    path = write_file(batches(gdf), "fgb", directory=tmp_path, layer_name="roads", crs=crs)
    assert path == tmp_path / "roads.fgb"
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
    assert back.crs.equals(gdf.crs)
    back = back.sort_values("fid").reset_index(drop=True)  # the spatial index stores features in Hilbert order
    assert back["fid"].tolist() == IDS
    # A 2D FlatGeobuf layer of header type Unknown keeps each feature's own type
    assert back.sort_values("fid").geometry.geom_type.tolist() == gdf.geometry.geom_type.tolist()
    assert_same_coordinates(back.geometry, gdf.geometry)
    assert_same_attributes(back, gdf, ["count", "maybe", "ratio", "gap", "name", "flag"])


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32633"])
def test_shapefile_round_trip(tmp_path: Path, crs: str) -> None:
    gdf = dataset(crs)
    notes: list[str] = []
    path = write_file(batches(gdf), "shp", directory=tmp_path, layer_name="roads", crs=crs, on_warning=notes.append)
    assert path == tmp_path / "roads.zip" and [p.name for p in tmp_path.iterdir()] == ["roads.zip"]
    assert sorted(zipfile.ZipFile(path).namelist()) == ["roads.cpg", "roads.dbf", "roads.prj", "roads.shp", "roads.shx"]
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT)
    assert (back.layer, back.source_format) == ("roads", "shp")
    result = back.gdf
    assert result.crs.equals(gdf.crs)
    assert result["fid"].tolist() == IDS
    # documented Shapefile limits: rings are rewritten clockwise and a one-part multi reads back as single;
    # the coordinates themselves are exact
    assert_same_coordinates(result.geometry.normalize(), gdf.geometry.normalize())
    assert_same_attributes(result, gdf, ["count", "maybe", "flag"])
    np.testing.assert_allclose(result["ratio"], gdf["ratio"], rtol=1e-14)  # DBF stores decimal text
    assert result["name"].fillna("").tolist() == gdf["name"].fillna("").tolist()  # DBF has no null text


def test_shapefile_field_names_are_cut_to_ten_characters_with_a_warning(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame({"population_2020": [1]}, geometry=[shapely.Point(1, 2)], crs="EPSG:4326")
    notes: list[str] = []
    path = write_file([(gdf, [1])], "shp", directory=tmp_path, layer_name="pts", crs=gdf.crs, on_warning=notes.append)
    assert notes == ["field 'population_2020' was renamed to 'population' (Shapefile field names are limited)"]
    assert list(read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf.columns) == ["fid", "population", "geometry"]


def test_attribute_called_fid_is_kept_as_fid_1(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame({"FID": [77]}, geometry=[shapely.Point(1, 2)], crs="EPSG:4326")
    notes: list[str] = []
    path = write_file([(gdf, [5])], "fgb", directory=tmp_path, layer_name="pts", crs=gdf.crs, on_warning=notes.append)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
    assert (back["fid"].tolist(), back["fid_1"].tolist()) == ([5], [77])
    assert notes == ["attribute 'FID' was written as 'fid_1' ('fid' holds the feature id)"]


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "fgb"])
def test_empty_dataset_still_has_its_schema(tmp_path: Path, fmt: str) -> None:
    empty = gpd.GeoDataFrame(
        {"n": np.array([], dtype=np.int64), "s": pd.array([], dtype="str")}, geometry=[], crs="EPSG:2263"
    )
    path = write_file([(empty, [])], fmt, directory=tmp_path, layer_name="none", crs="EPSG:2263")
    if fmt == "shp":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp_path / "x")
        path = tmp_path / "x" / "none.shp"
    info = pyogrio.read_info(path, force_feature_count=True)
    assert info["features"] == 0
    assert [f for f in info["fields"] if f != "fid"] == ["n", "s"]
    assert CRS.from_user_input(info["crs"]).to_epsg() == 2263


def test_no_batches_at_all_gives_an_empty_file(tmp_path: Path) -> None:
    path = write_file(iter(()), "gpkg", directory=tmp_path, layer_name="none", crs="EPSG:4326")
    assert pyogrio.read_info(path)["features"] == 0


def test_three_dimensional_geometries_keep_z(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(
        {"n": [1, 2]},
        geometry=[shapely.LineString([(0.1, 0.2, 0.3), (1, 1, 1)]), shapely.LineString([(2, 2, 2.5), (3, 3, 3)])],
        crs="EPSG:32633",
    )
    for fmt in ("gpkg", "fgb", "shp"):
        path = write_file([(gdf, [1, 2])], fmt, directory=tmp_path, layer_name=f"z{fmt}", crs=gdf.crs)
        back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
        if "fid" in back.columns:
            back = back.sort_values("fid")
        assert_same_coordinates(back.geometry, gdf.geometry)


def test_shapefile_cannot_hold_mixed_geometry_families(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0), shapely.box(0, 0, 1, 1)], crs="EPSG:4326")
    with pytest.raises(UnsupportedGeometryType) as info:
        write_file([(gdf, [1, 2])], "shp", directory=tmp_path, layer_name="mixed", crs=gdf.crs)
    assert info.value.status_code == 422
    assert info.value.detail == "a Shapefile holds one geometry type; this dataset has Point, Polygon"
    path = write_file([(gdf, [1, 2])], "gpkg", directory=tmp_path, layer_name="mixed", crs=gdf.crs)
    assert pyogrio.read_dataframe(path).geometry.geom_type.tolist() == ["Point", "Polygon"]
    assert [p.name for p in tmp_path.iterdir()] == ["mixed.gpkg"]  # no staging file, no half-written Shapefile


def test_nested_values_are_written_as_json_text(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame({"meta": [{"a": [1, 2]}, None]}, geometry=[shapely.Point(0, 0)] * 2, crs="EPSG:4326")
    path = write_file([(gdf, [1, 2])], "gpkg", directory=tmp_path, layer_name="nested", crs=gdf.crs)
    assert pyogrio.read_dataframe(path)["meta"].tolist()[0] == '{"a":[1,2]}'


def test_unknown_file_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not 'geojson'"):
        write_file([], "geojson", directory=tmp_path, layer_name="x", crs="EPSG:4326")


def test_large_export_in_batches(tmp_path: Path) -> None:
    n = 20_000
    rng = np.random.default_rng(1)
    gdf = gpd.GeoDataFrame(
        {"v": rng.random(n)}, geometry=shapely.points(rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)), crs="EPSG:4326"
    )
    ids = list(range(1, 2 * n, 2))
    path = write_file(batches(gdf, ids, size=5_000), "fgb", directory=tmp_path, layer_name="big", crs=gdf.crs)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf.sort_values("fid")
    assert back["fid"].tolist() == ids
    assert_same_coordinates(back.geometry, gdf.geometry)


def test_datetimes_are_written_as_utc_and_long_text_is_reported_for_shapefiles(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(
        {"when": pd.to_datetime(["2024-01-02T03:04:05+02:00", None]), "text": ["x" * 300, None]},
        geometry=[shapely.Point(0, 0), shapely.Point(1, 1)],
        crs="EPSG:4326",
    )
    path = write_file([(gdf, [1, 2])], "gpkg", directory=tmp_path, layer_name="t", crs=gdf.crs)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
    assert back["when"].iloc[0] == pd.Timestamp("2024-01-02T01:04:05Z") and pd.isna(back["when"].iloc[1])
    notes: list[str] = []
    write_file([(gdf, [1, 2])], "shp", directory=tmp_path, layer_name="t", crs=gdf.crs, on_warning=notes.append)
    assert notes == ["text in field 'text' was cut to 254 characters (Shapefile limit)"]


def test_mixed_2d_and_3d(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(
        geometry=[shapely.Point(0.5, 1.5, 2.5), shapely.Point(3.5, 4.5), shapely.MultiPoint([(1, 2)])], crs="EPSG:32633"
    )
    path = write_file([(gdf, [1, 2, 3])], "gpkg", directory=tmp_path, layer_name="z", crs=gdf.crs)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
    assert back.geometry.has_z.tolist() == [True, False, False]  # GeoPackage keeps each feature as it is
    assert back.geometry.geom_type.tolist() == ["Point", "Point", "MultiPoint"]
    path = write_file([(gdf, [1, 2, 3])], "fgb", directory=tmp_path, layer_name="z", crs=gdf.crs)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf.sort_values("fid")
    # FlatGeobuf layers have one type and dimension: promoted to MultiPoint Z, z = 0 where there was none
    assert back.geometry.to_wkt().tolist() == [
        "MULTIPOINT Z ((0.5 1.5 2.5))",
        "MULTIPOINT Z ((3.5 4.5 0))",
        "MULTIPOINT Z ((1 2 0))",
    ]


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "countries.geojson"


@pytest.mark.skipif(not SAMPLE.exists(), reason="sample_data/countries.geojson is written by another change")
@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "fgb", "shp"])
def test_sample_countries_survive_export_and_import(tmp_path: Path, fmt: str) -> None:
    source = read_upload(SAMPLE, SAMPLE.name, max_unpacked_bytes=LIMIT).gdf
    ids = list(range(1, len(source) + 1))
    if fmt == "geojson":
        path = tmp_path / "countries.geojson"
        path.write_bytes(b"".join(stream_geojson(batches(source, ids, 50), crs_member=geojson_crs_member(source.crs))))
    else:
        path = write_file(batches(source, ids, 50), fmt, directory=tmp_path, layer_name="countries", crs=source.crs)
    back = read_upload(path, path.name, max_unpacked_bytes=LIMIT).gdf
    if "fid" in back.columns:
        back = back.sort_values("fid").reset_index(drop=True)
    assert back.crs.equals(source.crs, ignore_axis_order=True)
    if fmt == "shp":
        assert_same_coordinates(back.geometry.normalize(), source.geometry.normalize())
    else:
        assert_same_coordinates(back.geometry, source.geometry)
    assert back["name"].tolist() == source["name"].tolist()
