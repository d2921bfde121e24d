"""Tool calls over REST: sessions, read tools, analyses in-process and as tasks, events, errors, isolation."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.agents.conftest import invoke, new_session, sse_events
from tests.conftest import SAMPLE, authed_client
from tests.helpers import unique, upload

pytestmark = pytest.mark.e2e
UTM_31N = 32631  # the squares lie in UTM zone 31N


def test_session_lifecycle_and_isolation(analyst: TestClient, other: TestClient, squares: dict) -> None:
    r = analyst.post("/api/v1/agent/sessions", json={"title": "survey"})
    assert r.status_code == 201 and r.headers["location"].endswith(r.json()["id"])
    sid = r.json()["id"]
    assert r.json()["mode"] == "rest" and r.json()["status"] == "active" and r.json()["last_message_at"]
    assert analyst.get(f"/api/v1/agent/sessions/{sid}").json()["title"] == "survey"
    mine = new_session(other, "theirs")
    for method, path, body in [("GET", "", None), ("GET", "/invocations", None), ("POST", "/close", None),
                               ("POST", "/tools/list_datasets/invoke", {}), ("GET", "/events?follow=false", None)]:
        r = other.request(method, f"/api/v1/agent/sessions/{sid}{path}", json=body)
        assert r.status_code == 404 and r.json()["error"] == "NotFound", (path, r.text)
    listed = {s["id"] for s in analyst.get("/api/v1/agent/sessions").json()["data"]}
    assert sid in listed and mine not in listed
    assert {s["id"] for s in other.get("/api/v1/agent/sessions").json()["data"]} == {mine}
    # another user's dataset is not found through the tools either
    assert invoke(other, mine, "describe_dataset", {"dataset_id": squares["id"]}).status_code == 404
    r = invoke(other, mine, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": {"value": 1, "unit": "m"}})
    assert r.status_code == 422 and r.json()["field"] == "input.dataset_id", r.text
    closed = analyst.post(f"/api/v1/agent/sessions/{sid}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    r = invoke(analyst, sid, "list_datasets", {})
    assert r.status_code == 409 and r.json()["field"] == "session_id"
    assert invoke(analyst, sid, "no_such_tool", {}).status_code in (404, 409)


def test_read_tools(analyst: TestClient, squares: dict) -> None:
    sid = new_session(analyst)
    r = invoke(analyst, sid, "list_datasets", {"name_contains": squares["name"][-6:]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and body["latency_ms"] >= 0 and body["task"] is None
    [ds] = body["result"]["datasets"]
    assert ds["id"] == squares["id"] and ds["feature_count"] == 3 and ds["fields"] == {"k": "int", "name": "str"}
    described = invoke(analyst, sid, "describe_dataset", {"dataset_id": squares["id"]}).json()["result"]
    assert described["srid"] == 4326 and described["links"]["features"].endswith("/features")
    by_bbox = invoke(analyst, sid, "query_features", {"dataset_id": squares["id"], "bbox": [1.0, 1.0, 3.0, 3.0]})
    assert [f["properties"]["k"] for f in by_bbox.json()["result"]["features"]["features"]] == [1, 2]
    by_attr = invoke(analyst, sid, "query_features", {
        "dataset_id": squares["id"], "filters": [{"field": "name", "op": "~", "value": "SQ2"}],
        "properties": ["k"]}).json()["result"]
    assert by_attr["feature_count"] == 1 and by_attr["features"]["features"][0]["properties"] == {"k": 2}
    bad = invoke(analyst, sid, "query_features", {"dataset_id": squares["id"], "filters": [
        {"field": "nope", "op": "=", "value": 1}]})
    assert bad.status_code == 422 and bad.json()["field"] == "filters", bad.text


def test_small_buffer_runs_in_process_and_matches_postgis(analyst: TestClient, squares: dict, pg: Any) -> None:
    sid = new_session(analyst)
    args = {"input": {"dataset_id": squares["id"]}, "distance": {"value": 500, "unit": "m"}}
    r = invoke(analyst, sid, "buffer", args)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["complete"] is True and result["feature_count"] == 3 and result["crs"] == "OGC:CRS84"
    assert result["metadata"]["strategy"].startswith("local")
    for feat in result["features"]["features"]:
        ours, ref = pg.execute(
            "SELECT ST_Area(ST_GeomFromGeoJSON(%s)::geography), ST_Area(ST_Transform(ST_Buffer(ST_Transform("
            "geometry, %s), 500, 'quad_segs=8'), 4326)::geography) FROM spatial_data "
            "WHERE dataset_id = %s AND attributes->>'k' = %s",
            (orjson.dumps(feat["geometry"]).decode(), UTM_31N, squares["id"], str(feat["properties"]["k"]))).fetchone()
        assert abs(ours - ref) / ref < 2e-3, (ours, ref)
    assert sum(1 for _ in pg.execute("SELECT 1 FROM agent_tool_invocations WHERE id = %s AND task_id IS NULL",
                                     (r.json()["invocation_id"],))) == 1


def test_bare_number_is_a_422_naming_the_argument_and_is_recorded(analyst: TestClient, squares: dict,
                                                                    pg: Any) -> None:
    sid = new_session(analyst)
    r = invoke(analyst, sid, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": 500})
    assert r.status_code == 422 and r.json()["field"] == "distance" and "unit" in r.json()["detail"]
    status, error, result = pg.execute("SELECT status, error, result FROM agent_tool_invocations WHERE id = %s",
                                       (r.json()["invocation_id"],)).fetchone()
    assert status == "failed" and error["field"] == "distance" and error["status_code"] == 422 and result is None


def test_large_buffer_becomes_a_task_with_events_and_a_shaped_result(analyst: TestClient, places: dict,
                                                                      worker: Any) -> None:
    sid = new_session(analyst)
    r = invoke(analyst, sid, "buffer", {"input": {"dataset_id": places["id"]}, "distance": {"value": 500, "unit": "m"}})
    assert r.status_code == 202, r.text
    task = r.json()["task"]
    assert r.json()["status"] == "submitted" and task["status"] == "accepted" and r.headers["location"].endswith(
        task["id"])
    events = sse_events(analyst, sid, until="task_finished")
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["tool_call_started", "tool_call_finished"] and kinds[-1] == "task_finished"
    assert "task_progress" in kinds and events[1]["task_id"] == task["id"]
    assert [e["sse_id"] for e in events] == sorted(e["sse_id"] for e in events)
    assert events[-1]["status"] == "successful" and events[-1]["invocation_id"] == r.json()["invocation_id"]
    progress = [float(e["progress"]) for e in events if e["event"] == "task_progress"]
    assert progress == sorted(progress)
    # resume after the second event: exactly the rest
    resumed = sse_events(analyst, sid, headers={"Last-Event-ID": str(events[1]["sse_id"])})
    assert [e["sse_id"] for e in resumed] == [e["sse_id"] for e in events[2:]]
    status = invoke(analyst, sid, "task_status", {"task_id": task["id"]}).json()["result"]
    assert status["status"] == "successful" and status["progress"] == 100
    shaped = invoke(analyst, sid, "task_result", {"task_id": task["id"]}).json()["result"]["result"]
    assert shaped["complete"] is False and shaped["feature_count"] == 243
    assert 0 < len(shaped["preview"]["features"]) <= 20 and shaped["full_result"]["dataset_id"] == status[
        "result_dataset_id"]
    n = 32  # 8 segments per quarter circle
    circle = math.pi * 500**2 * n / (2 * math.pi) * math.sin(2 * math.pi / n)
    assert shaped["geodesic_area_m2"] == pytest.approx(243 * circle, rel=3e-3)
    assert len(orjson.dumps(shaped)) < 32 * 1024


def test_large_answers_are_summaries_with_a_handle(analyst: TestClient) -> None:
    countries = upload(analyst, "c.geojson", (SAMPLE / "countries.geojson").read_bytes(), name=unique("ag_c")).json()
    sid = new_session(analyst)
    r = invoke(analyst, sid, "query_features", {"dataset_id": countries["id"], "limit": 500})
    result = r.json()["result"]
    assert r.status_code == 200 and result["complete"] is False and result["feature_count"] == 177
    assert result["geodesic_area_m2"] > 1.3e14 and len(result["extent"]) == 4
    assert result["full_result"]["features"] == f"/api/v1/datasets/{countries['id']}/features"
    assert len(orjson.dumps(r.json())) < 32 * 1024


def test_permissions_restrict_roles(agent_app: Any, agent_settings: Any, analyst: TestClient, squares: dict,
                                    pg: Any) -> None:
    viewer = authed_client(agent_app, agent_settings, ["viewer"])
    try:
        sid = new_session(viewer)
        r = invoke(viewer, sid, "buffer", {"input": {"geojson": {"type": "Point", "coordinates": [1, 2]}},
                                           "distance": {"value": 1, "unit": "km"}})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        assert pg.execute("SELECT status FROM agent_tool_invocations WHERE id = %s",
                          (r.json()["invocation_id"],)).fetchone()[0] == "rejected"
    finally:
        viewer.__exit__(None, None, None)
    pg.execute("UPDATE agent_tools SET permissions = '[\"admin\"]' WHERE name = 'describe_dataset'")
    try:
        r = invoke(analyst, new_session(analyst), "describe_dataset", {"dataset_id": squares["id"]})
        assert r.status_code == 403, r.text
    finally:
        pg.execute("UPDATE agent_tools SET permissions = '[\"admin\", \"analyst\", \"agent\", \"viewer\"]' "
                   "WHERE name = 'describe_dataset'")


def test_inline_geojson_runs_in_process(analyst: TestClient) -> None:
    sid = new_session(analyst)
    r = invoke(analyst, sid, "buffer", {"input": {"geojson": {"type": "Point", "coordinates": [13.4, 52.5]}},
                                        "distance": {"value": 1, "unit": "km"}})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["geodesic_area_m2"] == pytest.approx(math.pi * 1e6, rel=1e-2)
