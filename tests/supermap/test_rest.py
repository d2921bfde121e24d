"""The SuperMap surface with strict JSON (iserver-cli, curl): CreateChild + GET, asynchronousReturn, the
task records, coordtransfer, services.json, and the routing around it."""

from __future__ import annotations

import math
import time
import uuid

import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import box

from tests.helpers import fc, feature, unique
from tests.supermap.conftest import SERVICE
from tests.supermap.geoms import HOLED, TWO_PARTS, assert_same, from_result, gj, postgis, sm_points

BUFFER = {"sourceGeometry": {"id": 7, "type": "POINT", "parts": [1], "points": [{"x": 116.39, "y": 39.9}],
                             "style": None, "prjCoordSys": {"epsgCode": 4326}},
          "analystParameter": {"endType": "ROUND", "leftDistance": {"exp": None, "value": 0.01},
                               "rightDistance": {"exp": None, "value": 0.01}, "semicircleLineSegment": 10,
                               "radiusUnit": "METER"}}


def region(geom) -> dict:
    """A SuperMap REGION for a (multi)polygon, rings in order, no partTopo (as clients send them)."""
    rings = [r for p in getattr(geom, "geoms", [geom]) for r in (p.exterior, *p.interiors)]
    return {"type": "REGION", "parts": [len(r.coords) for r in rings],
            "points": [pt for r in rings for pt in sm_points(r.coords)], "prjCoordSys": {"epsgCode": 4326}}


def path_of(location: str) -> str:
    return location.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


def task_of(client: TestClient, task_id: str) -> dict:
    r = client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return r.json()


def test_strict_json_buffer_returns_content_and_records_the_task(client: TestClient, pg):
    r = client.post(SERVICE + "/geometry/buffer.json?returnContent=true", json=BUFFER)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["succeed"] is True and result["resultGeometry"]["type"] == "REGION"
    assert result["resultGeometry"]["prjCoordSys"] == {"epsgCode": 4326}
    row = pg.execute("SELECT analysis_type, status, supermap_request, supermap_result FROM analysis_tasks "
                     "WHERE supermap_result = %s::jsonb ORDER BY created_at DESC LIMIT 1",
                     (r.text,)).fetchone()
    assert row is not None, "the request must be recorded as a task whose result is what was returned"
    assert row[0] == "buffer" and row[1] == "successful"
    assert row[2]["body"] == BUFFER and row[2]["resource"] == "geometry/buffer"
    assert row[2]["query"] == {"returnContent": "true"}
    assert_same(from_result(result["resultGeometry"]),
                postgis(pg, "ST_Buffer(g1, 0.01, 'quad_segs=5')", shapely.Point(116.39, 39.9)))


def test_create_child_then_get(client: TestClient):
    for suffix in ("", ".json", ".rjson"):
        r = client.post(SERVICE + f"/geometry/buffer{suffix}", json=BUFFER)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["succeed"] is True and body["postResultType"] == "CreateChild"
        location = body["newResourceLocation"]
        assert location.endswith(f"/geometry/buffer/{body['newResourceID']}.json") and r.headers["location"] == location
        got = client.get(path_of(location))
        assert got.status_code == 200 and got.json()["resultGeometry"]["type"] == "REGION"
        assert client.get(path_of(location).removesuffix(".json")).json() == got.json()
        task = task_of(client, body["newResourceID"])
        assert task["status"] == "successful" and task["analysis_type"] == "buffer"
        assert task["supermap_result"] == got.json() and task["supermap_request"]["body"] == BUFFER
    # A child of another resource kind, or of nobody, is iServer's 404.
    other = client.get(SERVICE + f"/geometry/overlay/{body['newResourceID']}.json")
    assert other.status_code == 404 and other.json()["error"]["code"] == 404
    assert client.get(SERVICE + f"/geometry/buffer/{uuid.uuid4()}.json").json()["error"]["code"] == 404


def test_honour_radius_unit_opt_in(client: TestClient, pg):
    body = {**BUFFER, "analystParameter": {**BUFFER["analystParameter"], "leftDistance": {"value": 50},
                                            "radiusUnit": "METER"}}
    degrees = client.post(SERVICE + "/geometry/buffer.json?returnContent=true", json=body).json()
    metres = client.post(SERVICE + "/geometry/buffer.json?returnContent=true&honourRadiusUnit=true", json=body).json()
    deg_geom, m_geom = from_result(degrees["resultGeometry"]), from_result(metres["resultGeometry"])
    assert deg_geom.bounds[2] - deg_geom.bounds[0] == pytest.approx(100, rel=1e-6)  # 50 "degrees" of radius
    area = pg.execute("SELECT ST_Area(ST_GeomFromText(%s, 4326)::geography)", (m_geom.wkt,)).fetchone()[0]
    n = 4 * 5  # semicircleLineSegment 10: 5 segments per quarter circle, a 20-gon inscribed in 50 m
    assert area == pytest.approx(n / 2 * 50**2 * math.sin(2 * math.pi / n), rel=2e-3)
    assert metres["resultGeometry"]["prjCoordSys"] == {"epsgCode": 4326}
    kilometres = client.post(SERVICE + "/geometry/buffer.json?returnContent=true&honourRadiusUnit=true", json={
        **body, "analystParameter": {**body["analystParameter"], "leftDistance": {"value": 0.05},
                                     "radiusUnit": "KILOMETER"}}).json()
    assert from_result(kilometres["resultGeometry"]).area == pytest.approx(m_geom.area, rel=1e-9)


def test_overlay_and_batch_strict_json(client: TestClient, pg):
    operate = box(116.40, 39.90, 116.60, 40.10)
    body = {"operation": "ERASE", "sourceGeometry": region(HOLED), "operateGeometry": region(operate)}
    r = client.post(SERVICE + "/geometry/overlay.json?returnContent=true", json=body)
    assert r.status_code == 200, r.text
    assert_same(from_result(r.json()["resultGeometry"]), postgis(pg, "ST_Difference(g1, g2)", HOLED, operate))
    batch = {"operation": "XOR", "sourceGeometries": [region(HOLED), region(TWO_PARTS)],
             "operateGeometries": [region(operate)]}
    r = client.post(SERVICE + "/geometry/overlay/batch.json?returnContent=true", json=batch)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["sourceGeometry"] for i in items] == batch["sourceGeometries"]  # ignoreAnalystParam=false
    for item, geom in zip(items, (HOLED, TWO_PARTS), strict=True):
        assert_same(from_result(item["resultGeometry"]), postgis(pg, "ST_SymDifference(g1, g2)", geom, operate))
    child = client.post(SERVICE + "/geometry/overlay/batch.json", json=batch).json()
    assert child["newResourceLocation"].endswith(f"/geometry/overlay/batch/{child['newResourceID']}.json")
    assert client.get(path_of(child["newResourceLocation"])).json() == items


def test_coordtransfer_of_data_and_geometry_services(client: TestClient, pg):
    body = {"sourceGeometries": [region(HOLED), {"type": "LINE", "points": [{"x": 113.98, "y": 4.39},
                                                                          {"x": 114.98, "y": 5.39}]}],
            "sourceEpsgCode": 4326, "targetEpsgCode": 3857}
    direct = client.post("/iserver/services/geometry/restjsr/v1/geometry/coordtransfer.json", json=body)
    assert direct.status_code == 200, direct.text
    geoms = direct.json()
    assert [g["type"] for g in geoms] == ["REGION", "LINE"] and geoms[0]["partTopo"] == [1, -1]
    ref = postgis(pg, "ST_Transform(g1, 3857)", HOLED)
    assert shapely.equals_exact(from_result(geoms[0]), ref, tolerance=1e-6)
    child = client.post("/iserver/services/data-world/rest/data/coordtransfer.json", json={
        "sourcePoints": [{"x": 116.39, "y": 39.9}], "sourceEpsgCode": 4326, "targetEpsgCode": 3857})
    assert child.status_code == 201 and "/rest/data/coordtransfer/" in child.json()["newResourceLocation"]
    points = client.get(path_of(child.json()["newResourceLocation"])).json()
    x, y = pg.execute("SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID(ST_MakePoint(116.39, 39.9), 4326), 3857)"
                      " p").fetchone()
    assert points[0]["type"] == "POINT" and (points[0]["points"][0]["x"], points[0]["points"][0]["y"]) == \
        pytest.approx((x, y), abs=1e-6)
    assert task_of(client, child.json()["newResourceID"])["analysis_type"] == "reproject"


def test_region_round_trips_exactly_through_coordtransfer(client: TestClient):
    """Same CRS in and out: parts, holes (now with partTopo) and every vertex come back as sent."""
    for geom, topo in ((HOLED, [1, -1]), (TWO_PARTS, [1, -1, 1])):
        sent = region(geom)
        got = client.post("/iserver/services/geometry/restjsr/v1/geometry/coordtransfer.json",
                          json={"sourceGeometries": [sent], "sourceEpsgCode": 4326, "targetEpsgCode": 4326}).json()[0]
        assert got["parts"] == sent["parts"] and got["partTopo"] == topo and got["points"] == sent["points"]


def test_services_listing_for_iserver_cli(client: TestClient):
    for path in ("/iserver/services.json", "/iserver/services", "/iserver/services.rjson"):
        listing = client.get(path).json()
        analyst = [s for s in listing if "SpatialAnalyst" in s["componentType"]]
        assert len(analyst) == 1 and analyst[0]["name"].endswith("/restjsr")
    # iserver-cli strips "/restjsr" from the name and posts there: the service name is any name.
    name = analyst[0]["name"].removesuffix("/restjsr")
    r = client.post(f"/iserver/services/{name}/restjsr/spatialanalyst/geometry/buffer.json", json=BUFFER)
    assert r.status_code == 201


def test_routing_errors_are_iserver_bodies(client: TestClient):
    wrong_method = client.get(SERVICE + "/geometry/buffer.json")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == 405
    assert "POST" in wrong_method.json()["error"]["errorMsg"] and wrong_method.headers["allow"] == "POST"
    for path in ("/iserver/nothing", SERVICE + "/geometry/thiessenpolygon.json", SERVICE + "/geometry/buffer.xml"):
        r = client.post(path, json={})
        assert r.status_code == 404 and r.json() == {
            "succeed": False, "error": {"code": 404, "errorMsg": f"the resource {path} does not exist"}}
    bad_query = client.post(SERVICE + "/geometry/buffer.json?returnContent=maybe", json=BUFFER)
    assert bad_query.status_code == 400 and "returnContent" in bad_query.json()["error"]["errorMsg"]
    preflight = client.options(SERVICE + "/geometry/buffer.json", headers={
        "origin": "http://maps.example", "access-control-request-method": "POST",
        "access-control-request-headers": "x-custom"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"
    assert "x-custom" in preflight.headers["access-control-allow-headers"]
    cors = client.post(SERVICE + "/geometry/buffer.json", json=BUFFER, headers={"origin": "http://maps.example"})
    assert cors.headers["access-control-allow-origin"] == "*"
    # The native API keeps its own error shape.
    native = client.get("/api/v1/nothing")
    assert native.status_code == 404 and "succeed" not in native.json()


def test_unauthenticated_requests_get_iserver_401(app):
    with TestClient(app) as anonymous:
        r = anonymous.post(SERVICE + "/geometry/buffer.json?returnContent=true", json=BUFFER)
        assert r.status_code == 401 and r.json()["error"]["code"] == 401 and r.json()["succeed"] is False
        bogus = anonymous.post(SERVICE + "/geometry/buffer.json?token=not-a-token", json=BUFFER)
        assert bogus.status_code == 401 and bogus.json()["error"]["errorMsg"]


SQUARES = fc([feature(gj(box(116 + 0.2 * i, 39, 116.1 + 0.2 * i, 39.1)), pop=i) for i in range(6)])


@pytest.fixture(scope="module")
def squares(client: TestClient) -> dict:
    r = client.post("/api/v1/datasets", json={"name": unique("smsq"), **SQUARES})
    assert r.status_code == 201, r.text
    return r.json()


def dataset_buffer_body(**option) -> dict:
    return {"bufferAnalystParameter": {"endType": "ROUND", "leftDistance": {"value": 1},
                                       "rightDistance": {"value": 1}, "semicircleLineSegment": 8,
                                       "radiusUnit": "KILOMETER"},
            "filterQueryParameter": {"attributeFilter": "SMID < 10", "ids": [1, 2, 3]},
            "dataReturnOption": {"expectCount": 100, "dataReturnMode": "DATASET_ONLY", **option},
            "isAttributeRetained": True, "isUnion": True}


def test_iserver_cli_dataset_buffer_create_child_and_get(client: TestClient, worker, squares, pg):
    """iserver-cli's flow: strict JSON without returnContent, a CreateChild, then GET the location."""
    out = unique("smcli")
    r = client.post(SERVICE + f"/datasets/{squares['name']}@Jingjin/buffer.json",
                    json=dataset_buffer_body(dataset=out, deleteExistResultDataset=True))
    assert r.status_code == 201, r.text
    got = client.get(path_of(r.json()["newResourceLocation"]))
    assert got.status_code == 200 and got.json() == {"succeed": True, "message": None, "dataset": f"{out}@Jingjin",
                                                     "recordset": None}
    count, n_in = pg.execute("SELECT feature_count, (source->>'task_id') IS NOT NULL FROM datasets WHERE name = %s",
                             (out,)).fetchone()
    assert count == 1 and n_in  # isUnion: the three selected squares dissolved into one feature
    task = task_of(client, r.json()["newResourceID"])
    assert task["status"] == "successful" and task["parameters"]["input"]["where"]["op"] == "and"
    assert task["supermap_result"] == got.json()
    # Again with the same name: deleteExistResultDataset replaces it; without it, a clear 400.
    again = client.post(SERVICE + f"/datasets/{squares['name']}/buffer.json?returnContent=true",
                        json=dataset_buffer_body(dataset=out))
    assert again.status_code == 200 and again.json()["dataset"] == f"{out}@geoservice"
    refused = client.post(SERVICE + f"/datasets/{squares['name']}/buffer.json?returnContent=true",
                          json=dataset_buffer_body(dataset=out, deleteExistResultDataset=False))
    assert refused.status_code == 400 and "already exists" in refused.json()["error"]["errorMsg"]


def test_asynchronous_return_gives_the_child_at_once(client: TestClient, worker, squares):
    started = time.monotonic()
    r = client.post(SERVICE + f"/datasets/{squares['name']}/buffer.json?returnContent=true&asynchronousReturn=true",
                    json={**dataset_buffer_body(), "dataReturnOption": {"dataReturnMode": "RECORDSET_ONLY"},
                          "isUnion": False})
    assert r.status_code == 201 and r.json()["postResultType"] == "CreateChild"
    assert time.monotonic() - started < 5
    location = path_of(r.json()["newResourceLocation"])
    states = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = client.get(location)
        if got.status_code == 200:
            break
        assert got.status_code == 202 and got.json()["state"]["runState"] in ("ACCEPTED", "RUNNING")
        states.add(got.json()["state"]["runState"])
        time.sleep(0.1)
    result = got.json()
    assert result["dataset"] is None and len(result["recordset"]["features"]) == 3  # RECORDSET_ONLY
    assert [f["ID"] for f in result["recordset"]["features"]] == [1, 2, 3]
    assert result["recordset"]["fieldTypes"] == ["INT32", "INT32"]
    task = task_of(client, r.json()["newResourceID"])
    assert task["result_dataset_id"] is None  # no dataset kept for RECORDSET_ONLY
    assert client.get(location).json() == result


def test_return_content_past_the_wait_is_504(app, client: TestClient, worker, squares):
    from geoservice.api.routers.supermap import get_wait_s

    app.dependency_overrides[get_wait_s] = lambda: 0.001
    try:
        r = client.post(SERVICE + f"/datasets/{squares['name']}/buffer.json?returnContent=true",
                        json=dataset_buffer_body())
    finally:
        app.dependency_overrides.pop(get_wait_s, None)
    assert r.status_code == 504 and r.json()["error"]["code"] == 504
    location = path_of(r.headers["location"])
    assert "did not finish within" in r.json()["error"]["errorMsg"]
    deadline = time.monotonic() + 60
    while client.get(location).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get(location).json()["succeed"] is True


def test_dataset_overlay_with_operate_regions(client: TestClient, worker, squares, pg):
    cut = box(116.05, 38.9, 116.65, 39.05)
    body = {"operation": "CLIP", "operateRegions": [region(cut)], "sourceDatasetFilter": {"ids": [1, 2, 3, 4]},
            "dataReturnOption": {"dataReturnMode": "RECORDSET_ONLY"}, "tolerance": 0}
    r = client.post(SERVICE + f"/datasets/{squares['name']}/overlay.json?returnContent=true", json=body)
    assert r.status_code == 200, r.text
    features = r.json()["recordset"]["features"]
    ref = pg.execute("SELECT sum(ST_Area(ST_Intersection(geometry, ST_GeomFromText(%s, 4326)))) FROM spatial_data "
                     "WHERE dataset_id = %s AND fid <= 4", (cut.wkt, squares["id"])).fetchone()[0]
    assert sum(from_result(f["geometry"]).area for f in features) == pytest.approx(ref, rel=1e-9)
    assert r.json()["recordset"]["fields"] == ["SmID", "pop"]
