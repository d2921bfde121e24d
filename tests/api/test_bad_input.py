"""Hostile and malformed input on every surface: a 4xx naming the field and the problem, nothing written.

The references are PostgreSQL's own rules (``text``/``jsonb`` cannot hold U+0000 or an unpaired surrogate:
without the guard these requests end in a database error), the Earth (no latitude beyond 90), and the
limits of a 64-bit ``OFFSET``.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from geoservice.logging import RedactSecrets, redact
from tests.helpers import fc, feature, square, unique, upload
from tests.supermap.conftest import SERVICE
from tests.supermap.test_rest import BUFFER


def written(pg: psycopg.Connection) -> tuple[int, ...]:
    row = pg.execute("SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM spatial_data), "
                     "(SELECT count(*) FROM analysis_tasks), (SELECT count(*) FROM agent_sessions)").fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture(scope="module")
def cells(client: TestClient) -> dict[str, Any]:
    body = fc([feature(square(i, 0), name=f"c{i}", pop=i) for i in range(3)])
    r = client.post("/api/v1/datasets", json={"name": unique("badin"), **body})
    assert r.status_code == 201, r.text
    return r.json()


def _raw_json(client: TestClient, url: str, text: str) -> Any:
    return client.post(url, content=text.encode(), headers={"content-type": "application/json"})


def _expect(r: Any, status: int, field: str, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field, body
    for w in words:
        assert w in body["detail"], body


# JSON bodies written by hand: the escapes must reach the server as the client sent them
NUL_NAME = '{"name": "a\\u0000b", "type": "FeatureCollection", "features": []}'
NUL_PROPERTY = ('{"name": "ok-%s", "type": "FeatureCollection", "features": [{"type": "Feature", '
                '"geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"label": "x\\u0000"}}]}')
SURROGATE_KEY = ('{"name": "ok-%s", "type": "FeatureCollection", "features": [{"type": "Feature", '
                 '"geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"\\ud800": 1}}]}')


@pytest.mark.parametrize("text,field,word", [
    (NUL_NAME, "name", "NUL"),
    (NUL_PROPERTY, "features[0].properties.label", "NUL"),
    (SURROGATE_KEY, "features[0].properties", "surrogate"),
])
def test_text_postgres_cannot_store_is_refused_by_field(client: TestClient, pg: psycopg.Connection, text: str,
                                                        field: str, word: str) -> None:
    before = written(pg)
    body = text % unique("x") if "%s" in text else text
    _expect(_raw_json(client, "/api/v1/datasets", body), 422, field, word)
    assert written(pg) == before


def test_a_paired_surrogate_escape_is_ordinary_text(client: TestClient) -> None:
    # "\ud83c\udf0d" is the JSON spelling of U+1F30D (a globe): valid, stored, and read back unchanged
    name = unique("globe")
    r = _raw_json(client, "/api/v1/datasets", '{"name": "' + name + ' \\ud83c\\udf0d", "type": '
                  '"FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", '
                  '"coordinates": [1, 2]}, "properties": {}}]}')
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/datasets/{r.json()['id']}").json()["name"] == f"{name} \U0001F30D"


def test_nul_in_a_task_parameter_and_a_query_parameter(client: TestClient, pg: psycopg.Connection,
                                                       cells: dict[str, Any]) -> None:
    before = written(pg)
    r = _raw_json(client, "/api/v1/tasks", '{"name": "t", "analysis_type": "buffer", "parameters": {"input": '
                  '{"dataset_id": "' + cells["id"] + '"}, "distance": {"value": 1, "unit": "m"}, '
                  '"output_name": "o\\u0000"}}')
    _expect(r, 422, "parameters.output_name", "NUL")
    r = client.get("/api/v1/datasets", params={"name": "a\x00b"})
    assert r.status_code == 400 and "NUL" in r.json()["detail"], r.text
    r = client.get(f"/api/v1/datasets/{cells['id']}/features", params={"filter": "name = 'c\x00'"})
    assert r.status_code == 400 and r.json()["field"] == "filter", r.text
    assert written(pg) == before


def test_unusable_upload_file_names(client: TestClient, pg: psycopg.Connection) -> None:
    before = written(pg)
    for name in ("..", ".", "/"):
        r = upload(client, name, b'{"type": "FeatureCollection", "features": []}')
        assert r.status_code == 422, (name, r.text)
        assert r.json()["field"] == "file" and "file name" in r.json()["detail"]
    assert written(pg) == before
    # a path in the name is not a path on the server: the file is read under its own name
    gj = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, ' \
         b'"geometry": {"type": "Point", "coordinates": [1, 2]}}]}'
    r = upload(client, "../../../etc/x.geojson", gj, name=unique("pathname"))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("bbox", ["nan,0,1,1", "0,0,inf,1", "0,-Infinity,1,1"])
def test_non_finite_bbox(client: TestClient, cells: dict[str, Any], bbox: str) -> None:
    r = client.get(f"/api/v1/datasets/{cells['id']}/features", params={"bbox": bbox})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "bbox" and "finite" in r.json()["detail"]


@pytest.mark.parametrize("url", ["/api/v1/datasets", "/api/v1/tasks", "/api/v1/agent/sessions"])
def test_offset_beyond_a_64_bit_integer(client: TestClient, url: str) -> None:
    r = client.get(url, params={"offset": 2**63})
    assert r.status_code == 422, r.text
    assert "offset" in r.text


def test_unknown_attribute_in_settings_is_refused_at_submission(client: TestClient, pg: psycopg.Connection,
                                                                cells: dict[str, Any]) -> None:
    before = written(pg)
    r = client.post("/api/v1/tasks", json={"name": "t", "analysis_type": "buffer", "parameters": {
        "input": {"dataset_id": cells["id"]}, "distance": {"value": 1, "unit": "m"}, "dissolve_by": "zone"}})
    _expect(r, 422, "parameters.dissolve_by", "'zone'", "name")
    r = client.post("/api/v1/tasks", json={"name": "t", "analysis_type": "overlay", "parameters": {
        "input": {"dataset_id": cells["id"]}, "overlay": {"dataset_id": cells["id"]}, "operation": "intersect",
        "overlay_fields": ["pop", "nope"]}})
    _expect(r, 422, "parameters.overlay_fields", "'nope'")
    assert written(pg) == before


def test_bad_inline_geometry_is_refused_at_submission(client: TestClient, pg: psycopg.Connection) -> None:
    before = written(pg)
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    r = client.post("/api/v1/tasks", json={"name": "t", "analysis_type": "buffer", "parameters": {
        "input": {"geojson": fc([feature(square(0, 0)), feature(bowtie)])}, "distance": {"value": 1, "unit": "m"}}})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("parameters.input") and "self-intersection" in r.json()["detail"].lower()
    assert written(pg) == before


def test_supermap_geometry_beyond_the_earth_and_huge_distances(client: TestClient, pg: psycopg.Connection) -> None:
    before = written(pg)
    url = SERVICE + "/geometry/buffer.json?returnContent=true"
    beyond = {**BUFFER, "sourceGeometry": {**BUFFER["sourceGeometry"], "points": [{"x": 116.39, "y": 95.0}]}}
    r = client.post(url, json=beyond)
    assert r.status_code == 400 and "sourceGeometry" in r.json()["error"]["errorMsg"], r.text
    assert "latitude" in r.json()["error"]["errorMsg"]
    # the geometry service's distances are in the CRS's units: 1e308 degrees is larger than the Earth
    for value in (1e308, 181):
        huge = {**BUFFER, "analystParameter": {**BUFFER["analystParameter"], "leftDistance": {"value": value},
                                               "rightDistance": {"value": value}}}
        r = client.post(url, json=huge)
        assert r.status_code == 400 and "larger than the Earth" in r.json()["error"]["errorMsg"], r.text
    # in metres (honourRadiusUnit) the analysis's own bound applies
    metres = {**huge, "analystParameter": {**huge["analystParameter"], "radiusUnit": "METER",
                                           "leftDistance": {"value": 1e308}, "rightDistance": {"value": 1e308}}}
    r = client.post(url + "&honourRadiusUnit=true", json=metres)
    assert r.status_code == 400 and "distance" in r.json()["error"]["errorMsg"], r.text
    r = _raw_json(client, url, '{"sourceGeometry": {"type": "POINT", "parts": [1], "points": [{"x": 1, "y": 2}], '
                  '"prjCoordSys": {"epsgCode": 4326}, "id": "\\u0000"}, "analystParameter": {"leftDistance": '
                  '{"value": 0.1}}}')
    assert r.status_code == 400 and r.json()["succeed"] is False, r.text
    assert "sourceGeometry.id" in r.json()["error"]["errorMsg"]
    assert written(pg) == before


def test_agent_tool_arguments_with_nul(client: TestClient, pg: psycopg.Connection) -> None:
    s = client.post("/api/v1/agent/sessions", json={"title": unique("agent-nul")})
    assert s.status_code == 201, s.text
    r = _raw_json(client, f"/api/v1/agent/sessions/{s.json()['id']}/tools/list_datasets/invoke",
                  '{"arguments": {"name_contains": "a\\u0000"}}')
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text


def test_token_in_the_url_only_on_the_supermap_surface(client: TestClient) -> None:
    token = client.headers["Authorization"].removeprefix("Bearer ")
    with TestClient(client.app) as bare:
        assert bare.get("/api/v1/datasets", params={"token": token}).status_code == 401
        assert bare.get("/api/v1/datasets", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert bare.get("/iserver/services.json", params={"token": token}).status_code == 200
        assert bare.get("/iserver/services.json").status_code == 401


def test_credentials_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert redact("GET /iserver/services.json?token=abc.def-ghi&x=1") == \
        "GET /iserver/services.json?token=[REDACTED]&x=1"
    assert redact("Authorization: Bearer eyJhbGciOi.x.y") == "Authorization: Bearer [REDACTED]"
    assert redact("X-API-Key: gs_live_123") == "X-API-Key: [REDACTED]"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        # uvicorn's access log formats the URL as an argument
        log.warning('%s - "%s %s HTTP/1.1" %d', "127.0.0.1:1", "GET", "/iserver/x.json?token=s3cret", 200)
    finally:
        log.removeHandler(handler)
    assert "s3cret" not in stream.getvalue() and "token=[REDACTED]" in stream.getvalue()


def test_a_model_level_problem_names_its_field(client: TestClient, cells: dict[str, Any]) -> None:
    r = client.post("/api/v1/tasks", json={"name": "t", "analysis_type": "buffer", "parameters": {
        "input": {"dataset_id": cells["id"]}, "distance": 500}})
    _expect(r, 422, "parameters.distance", "no unit")
