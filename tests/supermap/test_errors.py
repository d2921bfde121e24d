"""Bad input on the SuperMap surface: always iServer's error body with a clear errorMsg, nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import box

from tests.helpers import fc, feature, unique
from tests.supermap.conftest import SERVICE
from tests.supermap.geoms import gj
from tests.supermap.test_rest import BUFFER

FORM = {"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}


def written(pg: psycopg.Connection) -> tuple[int, ...]:
    row = pg.execute("SELECT (SELECT count(*) FROM analysis_tasks), (SELECT count(*) FROM datasets), "
                     "(SELECT count(*) FROM spatial_data)").fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture(scope="module")
def cells(client: TestClient) -> dict:
    body = fc([feature(gj(box(i, 0, i + 1, 1)), name=f"c{i}", pop=i) for i in range(4)])
    r = client.post("/api/v1/datasets", json={"name": unique("smerr"), **body})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def nothing_written(pg: psycopg.Connection) -> Iterator[None]:
    before = written(pg)
    yield
    assert written(pg) == before, "a failed request must write nothing"


def expect(r, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["succeed"] is False and body["error"]["code"] == status and set(body) == {"succeed", "error"}
    for fragment in fragments:
        assert fragment in body["error"]["errorMsg"], body


def buffer_with(**parameter) -> dict:
    return {**BUFFER, "analystParameter": {**BUFFER["analystParameter"], **parameter}}


def test_unknown_dataset(client: TestClient, nothing_written):
    r = client.post(SERVICE + "/datasets/Landu@Jingjin/buffer.json?returnContent=true",
                    json={"bufferAnalystParameter": {"leftDistance": {"value": 10}}})
    expect(r, 400, "dataset Landu@Jingjin does not exist")
    r = client.post(SERVICE + "/datasets/Landu@Jingjin/overlay.json?returnContent=true",
                    json={"operation": "CLIP", "operateDataset": "x"})
    expect(r, 400, "does not exist")


def test_negative_or_zero_distance(client: TestClient, cells, nothing_written):
    for value in (-1, 0):
        expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true",
                           json=buffer_with(leftDistance={"value": value})), 400, "leftDistance must be greater than 0")
    expect(client.post(SERVICE + f"/datasets/{cells['name']}/buffer.json?returnContent=true",
                       json={"bufferAnalystParameter": {"leftDistance": {"value": -5}}}), 400, "leftDistance")
    expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true",
                       json=buffer_with(rightDistance={"value": -1}, endType="FLAT")), 400, "rightDistance")
    expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true",
                       json=buffer_with(radiusUnit="PARSEC")), 400, "radiusUnit")
    expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true",
                       json=buffer_with(leftDistance={"exp": "pop * 2", "value": None})), 400, "field expression")


@pytest.mark.parametrize("geometry,message", [
    ({"type": "REGION", "parts": [5], "points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 0, "y": 1}]},
     "parts adds up to 5 vertices but there are 3 points"),
    ({"type": "POINT", "points": [{"x": 1}]}, "points[0] must have finite numeric 'x' and 'y'"),
    ({"type": "POINT", "points": [{"x": "1", "y": 2}]}, "points[0]"),
    ({"type": "LINE", "parts": [1], "points": [{"x": 0, "y": 0}]}, "a line part needs 2"),
    ({"type": "REGION", "points": [{"x": 0, "y": 0}, {"x": 1, "y": 1}, {"x": 0, "y": 0}]}, "fewer than 3 distinct"),
    ({"type": "CIRCLE", "points": [{"x": 0, "y": 0}]}, "type 'CIRCLE' is not supported"),
    ({"points": [{"x": 0, "y": 0}]}, "type None is not supported"),
    ({"type": "POINT", "points": []}, "points must be a non-empty array"),
    ({"type": "POINT", "points": [{"x": 0, "y": 0}], "prjCoordSys": {"epsgCode": 999999}}, "999999"),
    ("POINT(1 2)", "must be a SuperMap geometry object"),
])
def test_malformed_geometry(client: TestClient, geometry, message, nothing_written):
    expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true",
                       json={**BUFFER, "sourceGeometry": geometry}), 400, message)


def test_unknown_operation(client: TestClient, cells, nothing_written):
    square = {"type": "REGION", "points": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 1, "y": 1}, {"x": 0, "y": 0}]}
    body = {"operation": "MERGE", "sourceGeometry": square, "operateGeometry": square}
    expect(client.post(SERVICE + "/geometry/overlay.json?returnContent=true", json=body), 400,
           "operation must be one of CLIP, ERASE, IDENTITY, INTERSECT, UNION, UPDATE, XOR, got 'MERGE'")
    expect(client.post(SERVICE + f"/datasets/{cells['name']}/overlay.json?returnContent=true",
                       json={"operation": "MERGE", "operateDataset": cells["name"]}), 400, "got 'MERGE'")
    line = {"type": "LINE", "points": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]}
    expect(client.post(SERVICE + "/geometry/overlay.json?returnContent=true",
                       json={**body, "operation": "UNION", "sourceGeometry": line}), 400, "UNION needs a REGION")


@pytest.mark.parametrize("content,headers,message", [
    (b"", FORM, "the request body is empty"),
    (b"sourceGeometry=1&analystParameter=2", FORM, "not JSON"),
    (b"{'analystParameter':{'leftDistance':{'value':1}", FORM, "not valid JSON"),
    (b"{'analystParameter': oops}", FORM, "unexpected word 'oops'"),
    (b"{\"a\": 'unterminated}", FORM, "unterminated string"),
    (b"\xff\xfe{", FORM, "not UTF-8"),
    (b"[1, 2, 3]", {"Content-Type": "application/json"}, "must be a JSON object"),
    (b"{\"sourceGeometry\": ", {"Content-Type": "application/json"}, "not valid JSON"),
])
def test_unparseable_body(client: TestClient, content, headers, message, nothing_written):
    expect(client.post(SERVICE + "/geometry/buffer.json?returnContent=true", content=content, headers=headers),
           400, message)


@pytest.mark.parametrize("attribute_filter,message", [
    ("pop > 0; DROP TABLE datasets; --", "unexpected character ';'"),
    ("name = 'x' OR 1=1", "one field and one value, not two values"),
    ("pop > 0 UNION SELECT password FROM users", "expected AND, OR or the end of the filter"),
    ("pg_sleep(10) IS NULL", "functions such as pg_sleep(...) are not supported"),
    ("name = 'x' /* comment */", "unexpected character '/'"),
    ("attributes->>'x' = '1'", "found '-' at character 10"),
    ("nosuchfield = 1", "has no field 'nosuchfield'"),
    ("pop = 'one'", "field pop is numeric"),
])
def test_sql_injection_filters_are_refused(client: TestClient, cells, attribute_filter, message, nothing_written):
    body = {"bufferAnalystParameter": {"leftDistance": {"value": 10}},
            "filterQueryParameter": {"attributeFilter": attribute_filter}}
    expect(client.post(SERVICE + f"/datasets/{cells['name']}/buffer.json?returnContent=true", json=body),
           400, "attributeFilter", message)


def test_injection_inside_a_string_is_just_a_value(client: TestClient, cells, pg, nothing_written):
    """A quote-escaped payload is a bound parameter: it selects nothing and harms nothing."""
    body = {"bufferAnalystParameter": {"leftDistance": {"value": 10}},
            "filterQueryParameter": {"attributeFilter": "name = 'x''; DROP TABLE spatial_data; --'"}}
    expect(client.post(SERVICE + f"/datasets/{cells['name']}/buffer.json?returnContent=true", json=body),
           400, "selects no features")
    assert pg.execute("SELECT count(*) FROM spatial_data WHERE dataset_id = %s", (cells["id"],)).fetchone()[0] == 4
