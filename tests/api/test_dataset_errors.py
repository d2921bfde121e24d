"""Every bad input gets a 4xx JSON error naming the field/feature and problem, and writes nothing."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient

from geoservice.config import Settings
from tests.conftest import SAMPLE, authed_client
from tests.helpers import counts, fc, feature, square, unique, upload

BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
UNCLOSED = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}


def _post(client: TestClient, body: dict, **params) -> tuple[int, dict]:
    r = client.post("/api/v1/datasets", json={"name": unique("bad"), **body}, params=params)
    return r.status_code, r.json()


@pytest.mark.parametrize(
    "features,status,field,feature_index,words",
    [
        ([feature(square(0, 0)), feature(BOWTIE)], 422, "features[1].geometry", 1, "self-intersection"),
        ([feature(UNCLOSED)], 422, "features[0].geometry", 0, "not closed"),
        ([feature({"type": "Point", "coordinates": [10, 91]})], 422, "features[0].geometry", 0, "latitude"),
        ([feature({"type": "Point", "coordinates": [0, 0]}), feature(square(0, 0))], 422, None, None, "mixed"),
        ([feature({"type": "Polygon", "coordinates": []})], 422, "features[0].geometry", 0, "empty"),
        ([feature(None)], 422, "features[0].geometry", 0, "null"),
        ([feature({"type": "Blob", "coordinates": [0, 0]})], 422, "features[0].geometry", 0, "blob"),
        ([{"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", 1]}}], 422,
         "features[0].geometry", 0, "numeric"),
    ],
)
def test_invalid_geometries(client: TestClient, pg, features, status, field, feature_index, words) -> None:
    before = counts(pg)
    code, body = _post(client, fc(features))
    assert code == status, body
    assert words in body["detail"].lower(), body
    if field is not None:
        assert body["field"] == field
        assert body["feature"] == feature_index
    assert counts(pg) == before


def test_infinite_coordinate(client: TestClient, pg) -> None:
    before = counts(pg)
    raw = b'{"name": "inf", "type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},' \
          b' "geometry": {"type": "Point", "coordinates": [1e999, 0]}}]}'
    r = client.post("/api/v1/datasets", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"] != "InternalError"
    assert "finite" in r.json()["detail"].lower() or "json" in r.json()["detail"].lower()
    assert counts(pg) == before


def test_nan_coordinate_in_uploaded_file(client: TestClient, pg) -> None:
    before = counts(pg)
    raw = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},' \
          b' "geometry": {"type": "Point", "coordinates": [NaN, 0]}}]}'
    r = upload(client, "nan.geojson", raw, name=unique("nan"))
    assert 400 <= r.status_code < 500 and r.json()["error"] != "InternalError"
    assert counts(pg) == before


def test_unknown_crs(client: TestClient, pg) -> None:
    before = counts(pg)
    code, body = _post(client, fc([feature(square(0, 0))]), crs="EPSG:999999")
    assert code == 422 and body["field"] == "crs" and "999999" in body["detail"]
    assert counts(pg) == before


def test_empty_feature_collection(client: TestClient, pg) -> None:
    before = counts(pg)
    code, body = _post(client, fc([]))
    assert code == 422 and body["field"] == "features" and "no features" in body["detail"].lower()
    assert counts(pg) == before


def test_wrong_type(client: TestClient, pg) -> None:
    before = counts(pg)
    code, body = _post(client, {"type": "Feature", "geometry": square(0, 0), "properties": {}})
    assert code == 422 and body["field"] == "type" and "FeatureCollection" in body["detail"]
    assert counts(pg) == before


def test_invalid_json_and_media_type(client: TestClient, pg) -> None:
    before = counts(pg)
    r = client.post("/api/v1/datasets", content=b'{"type": "Feature', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.post("/api/v1/datasets", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert counts(pg) == before


def test_duplicate_name(client: TestClient, pg) -> None:
    name = unique("dup")
    assert client.post("/api/v1/datasets", json={"name": name, **fc([feature(square(0, 0))])}).status_code == 201
    before = counts(pg)
    r = client.post("/api/v1/datasets", json={"name": name, **fc([feature(square(0, 0))])})
    assert r.status_code == 409 and r.json()["field"] == "name"
    assert counts(pg) == before


def test_truncated_uploads(client: TestClient, pg) -> None:
    before = counts(pg)
    content = (SAMPLE / "countries.geojson").read_bytes()
    r = upload(client, "cut.geojson", content[: len(content) // 2], name=unique("cut"))
    assert r.status_code == 422 and r.json()["error"] != "InternalError", r.text
    r = upload(client, "cut.gpkg", b"SQLite format 3\x00" + b"\x00" * 200, name=unique("cut"))
    assert r.status_code == 422, r.text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.shp", b"x" * 5000)
    r = upload(client, "cut.zip", buf.getvalue()[:-40], name=unique("cut"))
    assert r.status_code == 422 and "zip" in r.json()["detail"].lower(), r.text
    assert counts(pg) == before


def test_zip_bomb(client: TestClient, pg) -> None:
    before = counts(pg)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.shp", b"\x00" * (64 * 1024 * 1024))
    assert len(buf.getvalue()) < 200_000
    r = upload(client, "bomb.zip", buf.getvalue(), name=unique("bomb"))
    assert r.status_code in (413, 422) and "bomb" in r.json()["detail"].lower(), r.text
    assert counts(pg) == before


def test_zip_slip(client: TestClient, pg) -> None:
    before = counts(pg)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.shp", b"x")
    r = upload(client, "slip.zip", buf.getvalue(), name=unique("slip"))
    assert r.status_code in (400, 422) and "../evil.shp" in r.json()["detail"], r.text
    assert counts(pg) == before


def test_csv_without_crs(client: TestClient, pg) -> None:
    before = counts(pg)
    r = upload(client, "p.csv", b"lon,lat\n1,2\n", name=unique("nocrs"))
    assert r.status_code == 422 and r.json()["field"] == "crs", r.text
    assert counts(pg) == before


def test_body_over_limit(settings: Settings, pg) -> None:
    from geoservice.api.app import create_app

    small = settings.model_copy(update={"max_upload_bytes": 4096})
    before = counts(pg)
    c = authed_client(create_app(small), small)
    with c:
        big = fc([feature(square(i, 0), pad="x" * 100) for i in range(100)])
        r = c.post("/api/v1/datasets", json={"name": unique("big"), **big})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
        r = upload(c, "big.geojson", (SAMPLE / "countries.geojson").read_bytes(), name=unique("big"))
        assert r.status_code == 413
        # A chunked body without Content-Length is counted while it streams.
        chunks = iter([b"{" + b" " * 3000] * 3)
        r = c.post("/api/v1/datasets", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
    assert counts(pg) == before
