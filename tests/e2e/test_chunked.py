"""Chunked execution (issue #11): chunked results equal single-piece results for every operation.

A worker with tiny chunks (``chunk_features=20``, on its own queue) runs each task in many chunks over its
two pool processes; the session's shared worker (default chunk sizes, larger than these layers) runs the
same request as one piece. Both results are compared row by row in PostGIS: same rows, same attributes,
areas and lengths within 1e-9.
Data: the sample data, and synthetic layers with features on chunk borders, across the antimeridian and
near the poles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from geoservice.config import Settings
from tests.conftest import REDIS_URL, SAMPLE, WorkerProcess, authed_client, settings_env
from tests.e2e.test_tasks import submit, wait_final
from tests.helpers import fc, feature, square, unique, upload

pytestmark = [pytest.mark.e2e, pytest.mark.chunked]
CHUNK = {"chunk_features": "20", "chunk_vertices": "100000"}


@pytest.fixture(scope="module")
def chunk_env(database_url: str, queue_name: str) -> dict[str, str]:
    return settings_env(database_url, f"{queue_name}-chunks", **CHUNK)


@pytest.fixture(scope="module")
def chunky(chunk_env: dict[str, str]) -> Iterator[TestClient]:
    """An API on the chunk queue, and a worker (2 pool processes) that cuts tasks into 20-feature chunks."""
    import redis

    from geoservice.api.app import create_app

    settings = Settings(**{k.removeprefix("GEOSERVICE_").lower(): v for k, v in chunk_env.items()})  # type: ignore[arg-type]
    worker = WorkerProcess(chunk_env, concurrency=2)
    client = authed_client(create_app(settings), settings)
    try:
        worker.wait_ready(redis.Redis.from_url(REDIS_URL), chunk_env["GEOSERVICE_TASK_QUEUE"])
        yield client
    finally:
        client.__exit__(None, None, None)
        worker.stop()


def _public(client: TestClient, body: Any) -> dict[str, Any]:
    ds = body.json() if hasattr(body, "json") else body
    assert "id" in ds, ds
    assert client.patch(f"/api/v1/datasets/{ds['id']}", json={"is_public": True}).status_code == 200
    return ds


@pytest.fixture(scope="module")
def layers(chunky: TestClient) -> dict[str, dict[str, Any]]:
    """Public datasets (so the one-piece run, as another user, reads the same data)."""
    out = {
        "places": _public(chunky, upload(chunky, "p.geojson", (SAMPLE / "populated_places.geojson").read_bytes(),
                                         name=unique("ch_places"))),
        "countries": _public(chunky, upload(chunky, "c.geojson", (SAMPLE / "countries.geojson").read_bytes(),
                                            name=unique("ch_countries"))),
    }
    # A grid of 1 degree squares straddling chunk borders, the antimeridian and reaching 89 degrees north.
    cells = [feature(square(x, y, 1.0), k=i, band=("north" if y > 60 else "south"), v=float(i) / 3)
             for i, (x, y) in enumerate([(x, y) for x in (-180, -179.5, 178.5, 179) for y in range(0, 89, 8)]
                                        + [(x, 10) for x in range(-20, 20, 2)])]
    out["cells"] = _public(chunky, chunky.post("/api/v1/datasets", json={"name": unique("ch_cells"), **fc(cells)}))
    # Overlay layer: bigger squares shifted half a cell, so almost every cell is cut.
    blocks = [feature(square(x + 0.5, y + 0.5, 2.0), b=i, v=float(-i))
              for i, (x, y) in enumerate([(x, y) for x in (-180, 178) for y in range(0, 89, 10)]
                                         + [(x, 9) for x in range(-20, 20, 4)])]
    out["blocks"] = _public(chunky, chunky.post("/api/v1/datasets", json={"name": unique("ch_blocks"), **fc(blocks)}))
    return out


def _run(client: TestClient, analysis_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    done = wait_final(client, submit(client, analysis_type, parameters)["id"], timeout=240)
    assert done["status"] == "successful", (done["error_code"], done["error_message"])
    return done


def _rows(pg: Any, dataset_id: str) -> list[tuple[Any, ...]]:
    return pg.execute("SELECT fid, attributes, ST_Area(geometry), ST_Length(geometry), ST_NPoints(geometry), "
                      "GeometryType(geometry) FROM spatial_data WHERE dataset_id = %s ORDER BY fid",
                      (dataset_id,)).fetchall()


def _same(pg: Any, chunked: dict[str, Any], single: dict[str, Any]) -> None:
    a, b = _rows(pg, chunked["result_dataset_id"]), _rows(pg, single["result_dataset_id"])
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b, strict=True):
        assert ra[0] == rb[0] and ra[1] == rb[1] and ra[5] == rb[5], (ra[:2], rb[:2])
        for x, y in ((ra[2], rb[2]), (ra[3], rb[3])):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (ra[0], x, y)
    meta = pg.execute("SELECT fields, geometry_type, feature_count, srid FROM datasets WHERE id IN (%s, %s) "
                      "ORDER BY id = %s", (chunked["result_dataset_id"], single["result_dataset_id"],
                                           chunked["result_dataset_id"])).fetchall()
    assert meta[0] == meta[1]


CASES = [
    ("buffer", "places", {"distance": {"value": 20, "unit": "km"}}),
    ("buffer", "cells", {"distance": {"value": 5, "unit": "km"}}),
    ("buffer", "cells", {"distance": {"value": -20, "unit": "km"}}),  # erodes: some features vanish
    ("buffer", "cells", {"distance": {"value": 30, "unit": "km"}, "dissolve": True}),
    ("buffer", "cells", {"distance": {"value": 30, "unit": "km"}, "dissolve_by": "band"}),
    ("reproject", "countries", {"target_crs": "EPSG:8857"}),
    ("reproject", "places", {"target_crs": "EPSG:3857"}),
    *[("overlay", "cells", {"overlay": "blocks", "operation": op})
      for op in ("intersect", "clip", "erase", "identity", "union", "update", "xor")],
]


@pytest.mark.parametrize("analysis_type,source,options", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_chunked_equals_single(chunky: TestClient, client: TestClient, worker: Any, layers: dict, pg: Any,
                               analysis_type: str, source: str, options: dict[str, Any]) -> None:
    parameters = {"input": {"dataset_id": layers[source]["id"]}, **options}
    if "overlay" in options:
        parameters["overlay"] = {"dataset_id": layers[options["overlay"]]["id"]}
    chunked = _run(chunky, analysis_type, parameters)
    single = _run(client, analysis_type, parameters)
    assert chunked["chunks_total"] and chunked["chunks_total"] > 2 and chunked["chunks_done"] == chunked["chunks_total"]
    assert single["chunks_total"] is None
    _same(pg, chunked, single)
    states = pg.execute("SELECT status, count(*) FROM analysis_chunks WHERE task_id = %s GROUP BY status",
                        (chunked["id"],)).fetchall()
    assert states == [("successful", chunked["chunks_total"])]


def test_chunks_ran_in_both_worker_processes(chunky: TestClient, pg: Any) -> None:
    workers = pg.execute("SELECT count(DISTINCT summary->>'worker') FROM analysis_chunks c JOIN analysis_tasks t "
                         "ON t.id = c.task_id WHERE t.queue LIKE '%-chunks'").fetchone()[0]
    assert workers == 2
