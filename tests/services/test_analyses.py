"""``services/analyses``, the one application service, and each front door as an adapter over it.

The same buffer asked through the task API (a worker), the SuperMap surface and an agent tool (both in the
API process) goes through one registry and one recording: identical geometries, and rows recorded the same
way; the buffer is checked against PostGIS (ST_Buffer in the point's UTM zone) as an independent reference.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
import shapely
from fastapi.testclient import TestClient

from geoservice.config import Settings
from geoservice.db.engine import transaction
from geoservice.errors import Conflict, InvalidInput, NotFound
from geoservice.iserver.decode import from_supermap
from geoservice.services import analyses
from geoservice.services.auth import principal_for_user
from tests.conftest import authed_client, make_user
from tests.e2e.test_tasks import submit, wait_final
from tests.helpers import fc, feature, square, unique

POINT = {"type": "Point", "coordinates": [2.35, 48.85]}
SM_BUFFER = "/iserver/services/spatialanalyst-x/restjsr/spatialanalyst/geometry/buffer.json"



@pytest.fixture(scope="module")
def me(client: TestClient, factory: Any) -> Any:
    with factory() as s:
        return principal_for_user(s, uuid.UUID(client.get("/api/v1/users/me").json()["id"]))


@pytest.fixture(scope="module")
def squares(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/v1/datasets", json={"name": unique("an_sq"), **fc([feature(square(0, 0), k=1)])})
    assert r.status_code == 201, r.text
    return r.json()


def prepare(factory: Any, principal: Any, analysis_type: str, parameters: Any, **kw: Any) -> Any:
    with factory() as s:
        return analyses.prepare(s, principal, analysis_type, parameters, plugins="", **kw)


def test_prepare_names_the_field_for_each_kind_of_problem(factory: Any, me: Any, squares: dict,
                                                          settings: Settings) -> None:
    with pytest.raises(InvalidInput) as e:
        prepare(factory, me, "teleport", {})
    assert e.value.field == "analysis_type"
    with pytest.raises(InvalidInput) as e:
        prepare(factory, me, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": 5})
    assert e.value.field == "parameters.distance" and "unit" in e.value.detail
    with pytest.raises(InvalidInput) as e:  # the agents' prefix: the argument itself
        prepare(factory, me, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": {"value": 5, "unit": "x"}},
                field_prefix="")
    assert e.value.field == "distance.unit"
    with factory() as s:
        other = principal_for_user(s, uuid.UUID(make_user(settings, ["analyst"])[0]))
    with pytest.raises(InvalidInput) as e:  # someone else's dataset is an unknown one
        prepare(factory, other, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": {"value": 5,
                                                                                                  "unit": "m"}})
    assert e.value.field == "parameters.input.dataset_id" and "unknown dataset" in e.value.detail
    with pytest.raises(Conflict) as c:
        prepare(factory, me, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": {"value": 5, "unit": "m"},
                                        "output_name": squares["name"]})
    assert c.value.field == "parameters.output_name"
    ok = prepare(factory, me, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": {"value": 5, "unit": "m"}})
    assert set(ok.sources) == {"input"} and ok.input_features() == 1 and ok.base_name() == squares["name"]
    assert ok.request.parameters() == {"input": {"dataset_id": squares["id"]}, "distance": {"value": 5.0, "unit": "m"},
                                       "cap_style": "round", "join_style": "round", "mitre_limit": 5.0,
                                       "quad_segs": 8, "single_sided": False, "dissolve": False}


def _inline_rows(pg: Any, task_id: str) -> tuple[Any, ...]:
    return pg.execute("SELECT t.status, t.analysis_type, t.parameters, r.result_type, r.data, t.result_dataset_id "
                      "FROM analysis_tasks t JOIN analysis_results r ON r.task_id = t.id WHERE t.id = %s",
                      (task_id,)).fetchone()


def test_the_same_buffer_through_every_front_door(client: TestClient, app: Any, settings: Settings, worker: Any,
                                                  pg: Any) -> None:
    # SuperMap: radiusUnit honoured, 16 segments per half circle = quad_segs 8
    body = {"sourceGeometry": {"type": "POINT", "points": [{"x": 2.35, "y": 48.85}], "prjCoordSys": {"epsgCode": 4326}},
            "analystParameter": {"leftDistance": {"value": 0.5}, "semicircleLineSegment": 16,
                                 "radiusUnit": "KILOMETER"}}
    r = client.post(SM_BUFFER, params={"returnContent": "false", "honourRadiusUnit": "true"}, json=body)
    assert r.status_code == 201, r.text
    sm_task = r.json()["newResourceID"]
    sm_geom = from_supermap(client.get(r.json()["newResourceLocation"].split("testserver")[1]).json()
                            ["resultGeometry"]).geom
    # An agent tool call (in-process: one feature)
    agent = authed_client(app, settings)
    try:
        sid = agent.post("/api/v1/agent/sessions", json={"title": "doors"}).json()["id"]
        r = agent.post(f"/api/v1/agent/sessions/{sid}/tools/buffer/invoke",
                       json={"input": {"geojson": POINT}, "distance": {"value": 500, "unit": "m"}})
        assert r.status_code == 200, r.text
        agent_geom = shapely.geometry.shape(r.json()["result"]["features"]["features"][0]["geometry"])
        agent_task = pg.execute("SELECT id::text FROM analysis_tasks WHERE description = %s",
                                (f"in-process run of agent tool call {r.json()['invocation_id']}",)).fetchone()[0]
    finally:
        agent.__exit__(None, None, None)
    # The task API (a worker)
    done = wait_final(client, submit(client, "buffer", {"input": {"geojson": POINT},
                                                        "distance": {"value": 500, "unit": "m"}})["id"])
    assert done["status"] == "successful", done
    wkb = pg.execute("SELECT ST_AsBinary(geometry) FROM spatial_data WHERE dataset_id = %s",
                     (done["result_dataset_id"],)).fetchone()[0]
    task_geom = shapely.from_wkb(bytes(wkb))
    assert shapely.equals_exact(sm_geom, agent_geom, tolerance=1e-9)
    assert shapely.equals_exact(task_geom, agent_geom, tolerance=1e-9)
    ref = pg.execute("SELECT ST_Area(ST_Transform(ST_Buffer(ST_Transform(ST_SetSRID(ST_MakePoint(2.35, 48.85), "
                     "4326), 32631), 500, 'quad_segs=8'), 4326)::geography)").fetchone()[0]
    area = pg.execute("SELECT ST_Area(ST_GeomFromText(%s, 4326)::geography)", (task_geom.wkt,)).fetchone()[0]
    assert abs(area - ref) / ref < 2e-3
    # Both in-process runs are successful tasks with a result row, recorded the same way
    for task_id in (sm_task, agent_task):
        status, kind, parameters, result_type, data, dataset = _inline_rows(pg, task_id)
        assert (status, kind, result_type, dataset) == ("successful", "buffer", "inline", None)
        assert parameters["distance"] == {"value": 500.0, "unit": "m"} and "geojson" in parameters["input"]
        assert data["feature_count"] == 1 and data["geodesic_area_m2"] == pytest.approx(area, rel=1e-6)


def test_follow_and_the_one_result_reader(factory: Any, me: Any, squares: dict, settings: Settings) -> None:
    prepared = prepare(factory, me, "buffer", {"input": {"dataset_id": squares["id"]},
                                               "distance": {"value": 5, "unit": "m"}})
    with transaction(factory) as s:  # committed but never sent (no send_after_commit): it stays accepted
        waiting = analyses.submit(s, settings, me, prepared, name="never sent", description=None).id
    with transaction(factory) as s:
        ran = analyses.run_inline(s, settings, me, prepared, name="here", description=None, store=True)
        done_id, dataset_id = ran.task_id, ran.dataset.id

    async def follow(task_id: uuid.UUID, timeout: float) -> list[Any]:
        return [snap async for snap in analyses.follow(factory, me, task_id, interval=0.1, timeout=timeout)]

    seen = anyio.run(follow, done_id, 5.0)
    assert [s.status for s in seen] == ["successful"] and seen[0].final
    assert anyio.run(lambda: analyses.wait_final(factory, me, waiting, timeout=0.5)) is None
    with factory() as s:
        found = analyses.result(s, me, done_id)
        assert found.dataset is not None and found.dataset.id == dataset_id and len(found.rows) == 1
        assert found.rows[0].result_type == "dataset" and found.rows[0].data["feature_count"] == 1
        assert analyses.result(s, me, waiting).rows == []
        with pytest.raises(NotFound):
            analyses.result(s, me, uuid.uuid4())
