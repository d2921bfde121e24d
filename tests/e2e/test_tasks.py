"""End to end: HTTP API -> Redis -> a real Celery worker process -> PostGIS, checked against PostGIS SQL."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pytest
import shapely
from fastapi.testclient import TestClient

from tests.conftest import SAMPLE
from tests.helpers import fc, feature, unique, upload

pytestmark = pytest.mark.e2e


def submit(client: TestClient, analysis_type: str, parameters: dict[str, Any], name: str = "t") -> dict:
    r = client.post("/api/v1/tasks", json={"name": name, "analysis_type": analysis_type, "parameters": parameters})
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(r.json()["id"])
    return r.json()


def wait_final(client: TestClient, task_id: str, timeout: float = 90) -> dict:
    """Follow the task's SSE stream until its final event; return the events seen."""
    events = []
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", params={"interval": 0.2}, timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, orjson.loads(line[5:])))
                if kind == "final":
                    break
    task = client.get(f"/api/v1/tasks/{task_id}").json()
    task["_events"] = events
    return task


def wait_status(client: TestClient, task_id: str, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/tasks/{task_id}").json()
        if predicate(task):
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached the expected state: {task}")


@pytest.fixture(scope="module")
def countries(client: TestClient) -> dict:
    r = upload(client, "countries.geojson", (SAMPLE / "countries.geojson").read_bytes(), name=unique("e2e_countries"))
    assert r.status_code == 201
    return r.json()


@pytest.fixture(scope="module")
def places(client: TestClient) -> dict:
    r = upload(client, "places.geojson", (SAMPLE / "populated_places.geojson").read_bytes(), name=unique("e2e_places"))
    assert r.status_code == 201
    return r.json()


def _compare_with_st_transform(pg, source_id: str, result_id: str, srid: int, atol: float,
                               repaired: int = 0) -> int:
    """Compare every vertex with ST_Transform; features the worker repaired (``make_valid``) are compared
    by area instead, and there must be exactly ``repaired`` of them."""
    rows = pg.execute(
        "SELECT ST_AsBinary(ST_Transform(s.geometry, %s)), ST_AsBinary(r.geometry) FROM spatial_data s "
        "JOIN spatial_data r ON r.fid = s.fid WHERE s.dataset_id = %s AND r.dataset_id = %s ORDER BY s.fid",
        (srid, source_id, result_id)).fetchall()
    ref = shapely.from_wkb([r[0] for r in rows])
    ours = shapely.from_wkb([r[1] for r in rows])
    same_shape = np.array([shapely.get_num_coordinates(a) == shapely.get_num_coordinates(b)
                           for a, b in zip(ref, ours, strict=True)])
    assert (~same_shape).sum() == repaired
    assert np.abs(shapely.get_coordinates(ref[same_shape]) - shapely.get_coordinates(ours[same_shape])).max() <= atol
    assert np.allclose(shapely.area(shapely.make_valid(ref[~same_shape])), shapely.area(ours[~same_shape]),
                       rtol=1e-6)
    return len(rows)


@pytest.mark.parametrize("target,srid,atol", [
    ("EPSG:3857", 3857, 1e-6), ("EPSG:4087", 4087, 1e-6), ("EPSG:3035", 3035, 1e-6), (3395, 3395, 1e-6),
])
def test_reproject_dataset_matches_st_transform(client: TestClient, worker, places: dict, pg, target, srid, atol):
    task = submit(client, "reproject", {"input": {"dataset_id": places["id"]}, "target_crs": target})
    assert task["status"] == "accepted" and task["supermap_request"]["body"]["targetEpsgCode"] == srid
    done = wait_final(client, task["id"])
    assert done["status"] == "successful", (done["error_code"], done["error_message"])
    assert float(done["progress"]) == 100 and done["completed_at"] and done["started_at"]
    results = client.get(f"/api/v1/tasks/{task['id']}/results").json()
    assert len(results["results"]) == 1
    row = results["results"][0]
    assert row["data"]["feature_count"] == 243 and row["links"]["dataset"].endswith(row["dataset_id"])
    assert "pipeline" in row["result_metadata"]["transformation"]
    assert _compare_with_st_transform(pg, places["id"], row["dataset_id"], srid, atol) == 243
    assert done["supermap_result"]["succeed"] is True


def test_reproject_polygons_state_plane_and_progress_events(client: TestClient, worker, countries, pg):
    task = submit(client, "reproject", {"input": {"dataset_id": countries["id"]}, "target_crs": "EPSG:8857"})
    done = wait_final(client, task["id"])
    assert done["status"] == "successful", (done["error_code"], done["error_message"])
    kinds = [k for k, _ in done["_events"]]
    assert kinds[-1] == "final" and done["_events"][-1][1]["status"] == "successful"
    row = client.get(f"/api/v1/tasks/{task['id']}/results").json()["results"][0]
    area = pg.execute("SELECT sum(ST_Area(geometry::geography)) FROM spatial_data WHERE dataset_id=%s",
                      (countries["id"],)).fetchone()[0]
    assert row["data"]["geodesic_area_m2"] == pytest.approx(area, rel=1e-3)
    # Sudan and Mozambique have slivers that self-intersect once projected; the worker repairs them.
    assert row["result_metadata"]["repaired_features"] == 2
    assert _compare_with_st_transform(pg, countries["id"], row["dataset_id"], 8857, 1e-4, repaired=2) == 177


def test_reproject_inline_geojson_known_coordinates(client: TestClient, worker, pg):
    # EPSG Guidance Note 7-2 style check: a point in UTM zone 31N, and Web Mercator of (180, 0).
    body = fc([feature({"type": "Point", "coordinates": [3.0, 0.0]}, k=1)])
    task = submit(client, "reproject", {"input": {"geojson": body}, "target_crs": 32631})
    done = wait_final(client, task["id"])
    assert done["status"] == "successful", (done["error_code"], done["error_message"])
    ds = done["result_dataset_id"]
    x, y = pg.execute("SELECT ST_X(geometry), ST_Y(geometry) FROM spatial_data WHERE dataset_id=%s", (ds,)).fetchone()
    assert (x, y) == pytest.approx((500000.0, 0.0), abs=1e-6)


def test_task_validation_names_the_field(client: TestClient, pg):
    before = pg.execute("SELECT count(*) FROM analysis_tasks").fetchone()[0]
    cases = [
        ({"analysis_type": "reproject", "parameters": {"input": {"geojson": fc([])}, "target_crs": "EPSG:999999"}},
         "parameters.target_crs"),
        ({"analysis_type": "reproject", "parameters": {"target_crs": 3857}}, "parameters.input"),
        ({"analysis_type": "reproject", "parameters": {"input": {"dataset_id": "6b1c0c4e-0000-4000-8000-000000000000"},
                                                        "target_crs": 3857}}, "parameters.input.dataset_id"),
        ({"analysis_type": "teleport", "parameters": {}}, "analysis_type"),
    ]
    for body, field in cases:
        r = client.post("/api/v1/tasks", json={"name": "bad", **body})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field, r.json()
    r = client.post("/api/v1/tasks", json={"name": "bad"})
    assert r.status_code == 422 and r.json()["field"] in {"analysis_type", "parameters"}
    assert pg.execute("SELECT count(*) FROM analysis_tasks").fetchone()[0] == before


def test_grid_needed_fails_naming_the_grid_unless_ballpark(client: TestClient, worker, pg):
    body = fc([feature({"type": "Point", "coordinates": [-98.0, 39.0]})])
    params = {"input": {"geojson": body, "crs": "EPSG:4267"}, "target_crs": "EPSG:4269"}
    failed = wait_final(client, submit(client, "reproject", params)["id"])
    assert failed["status"] == "failed" and failed["error_code"] == "TransformationUnavailable"
    assert "grid" in failed["error_message"].lower()
    assert client.get(f"/api/v1/tasks/{failed['id']}/results").json()["results"] == []
    ok = wait_final(client, submit(client, "reproject", {**params, "allow_ballpark": True})["id"])
    assert ok["status"] == "successful", ok
    meta = client.get(f"/api/v1/tasks/{ok['id']}/results").json()["results"][0]["result_metadata"]
    # The best available operation is used (here a Helmert via WGS 84, ~11 m) and the missing grid is named.
    assert meta["transformation"]["best_available"] is False
    assert meta["transformation"]["grids_missing"] and meta["transformation"]["accuracy_m"]


def test_list_tasks_filters(client: TestClient, worker):
    page = client.get("/api/v1/tasks", params={"status": "successful", "analysis_type": "reproject", "limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["limit"] == 2 and all(t["status"] == "successful" for t in body["data"])
    assert client.get("/api/v1/tasks", params={"status": "bogus"}).status_code == 422


def test_readyz_reports_worker(client: TestClient, worker):
    body = client.get("/readyz", params={"require_workers": "true"}).json()
    assert body["status"] == "ready" and body["checks"]["workers"]["alive"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "geoservice_http_requests_total" in client.get("/metrics").text


def test_reproject_state_plane_to_same_datum_and_utm(client: TestClient, worker, pg):
    """NAD83 state plane (US feet) -> NAD83 state plane (metres) and -> UTM 18N: grid-free, as ST_Transform."""
    import geopandas as gpd
    import pyogrio
    from shapely.geometry import Point

    gdf = gpd.GeoDataFrame({"k": range(20)}, geometry=[Point(980000 + 2000 * i, 190000 + 1500 * i).buffer(200)
                                                       for i in range(20)], crs="EPSG:2263")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lots.gpkg"
        pyogrio.write_dataframe(gdf, path)
        ds = upload(client, "lots.gpkg", path.read_bytes(), name=unique("sp")).json()
    for target in (32118, 26918):
        done = wait_final(client, submit(client, "reproject", {"input": {"dataset_id": ds["id"]},
                                                               "target_crs": target})["id"])
        assert done["status"] == "successful", (done["error_code"], done["error_message"])
        assert _compare_with_st_transform(pg, ds["id"], done["result_dataset_id"], target, 1e-6) == 20
