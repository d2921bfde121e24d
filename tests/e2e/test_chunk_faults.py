"""Chunked tasks under faults: a worker SIGKILLed mid-task, a second worker joining, cancel during fan-out, and
the memory of a chunk runner bounded by the chunk, not the dataset.

``slow_reproject`` (tests/plugins/slow.py) declares ``chunking="map"``: on a 400-feature dataset with 20-feature
chunks it runs as 20 chunks of about ``seconds`` each, so a test can act while chunks are in flight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import shapely
from fastapi.testclient import TestClient

from tests.conftest import REDIS_URL, WorkerProcess
from tests.e2e.test_robustness import isolated
from tests.e2e.test_tasks import submit, wait_final, wait_status
from tests.helpers import fc, feature, unique

pytestmark = [pytest.mark.e2e, pytest.mark.chunked, pytest.mark.faults]
CHUNKED = {"chunk_features": "20", "chunk_vertices": "1000000"}


def points_dataset(client: TestClient, n: int = 400) -> dict[str, Any]:
    body = fc([feature({"type": "Point", "coordinates": [float(i % 360 - 180), float(i % 170 - 85)]}, i=i)
               for i in range(n)])
    r = client.post("/api/v1/datasets", json={"name": unique("chunk_pts"), **body})
    assert r.status_code == 201, r.text
    return r.json()


def slow_chunks(dataset: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {"input": {"dataset_id": dataset["id"]}, "target_crs": "EPSG:3857", "seconds": seconds}


def chunks_done_at_least(n: int) -> Any:
    return lambda t: (t["chunks_done"] or 0) >= n or t["status"] in ("successful", "failed", "dismissed")


def chunk_rows(pg: Any, task_id: str) -> list[tuple[Any, ...]]:
    return pg.execute("SELECT seq, status, attempts, summary->>'worker' FROM analysis_chunks WHERE task_id = %s "
                      "ORDER BY seq", (task_id,)).fetchall()


def test_sigkill_mid_task_reruns_only_the_chunks_in_flight(database_url: str, pg: Any) -> None:
    with isolated(database_url, concurrency=2, **CHUNKED) as (client, worker, env, _s):
        assert worker is not None
        dataset = points_dataset(client)
        task = submit(client, "slow_reproject", slow_chunks(dataset, 0.6))
        wait_status(client, task["id"], chunks_done_at_least(3), timeout=60)
        deadline = time.monotonic() + 10
        while not any(r[1] == "running" for r in chunk_rows(pg, task["id"])) and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.kill()  # main process and both pool children, mid-chunk
        in_flight = [r for r in chunk_rows(pg, task["id"]) if r[1] == "running"]
        assert 1 <= len(in_flight) <= 2
        second = WorkerProcess(env, 2)
        try:
            second.wait_ready(redis.Redis.from_url(REDIS_URL), env["GEOSERVICE_TASK_QUEUE"])
            done = wait_final(client, task["id"], timeout=120)
        finally:
            second.stop()
        assert done["status"] == "successful", (done["error_code"], done["error_message"], second.output()[-2000:])
        rows = chunk_rows(pg, task["id"])
        assert [r[1] for r in rows] == ["successful"] * 20
        rerun = {r[0] for r in rows if r[2] > 1}
        assert rerun == {r[0] for r in in_flight}  # only the chunks in flight ran again
        count, distinct = pg.execute("SELECT count(*), count(DISTINCT fid) FROM spatial_data WHERE dataset_id = %s",
                                     (done["result_dataset_id"],)).fetchone()
        assert count == distinct == 400  # nothing committed twice


def test_a_second_worker_takes_chunks_of_a_running_task(database_url: str, pg: Any) -> None:
    with isolated(database_url, concurrency=1, **CHUNKED) as (client, worker, env, _s):
        assert worker is not None
        task = submit(client, "slow_reproject", slow_chunks(points_dataset(client), 0.4))
        wait_status(client, task["id"], chunks_done_at_least(2), timeout=60)
        second = WorkerProcess(env, 1)
        try:
            second.wait_ready(redis.Redis.from_url(REDIS_URL), env["GEOSERVICE_TASK_QUEUE"])
            done = wait_final(client, task["id"], timeout=120)
            joined = second.children()
        finally:
            second.stop()
        assert done["status"] == "successful"
        runners = {r[3] for r in chunk_rows(pg, task["id"])}
        assert len(runners) == 2 and any(r.endswith(f":{pid}") for r in runners for pid in joined)


def test_cancel_during_fan_out_stops_every_chunk_and_leaves_nothing(database_url: str, pg: Any) -> None:
    with isolated(database_url, concurrency=2, **CHUNKED) as (client, _w, _e, _s):
        before = pg.execute("SELECT count(*) FROM datasets").fetchone()[0]
        task = submit(client, "slow_reproject", slow_chunks(points_dataset(client), 1.0))
        wait_status(client, task["id"], chunks_done_at_least(2), timeout=60)
        table = pg.execute("SELECT stage_table FROM analysis_plans WHERE task_id = %s", (task["id"],)).fetchone()[0]
        assert pg.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
        r = client.post(f"/api/v1/tasks/{task['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "dismissed"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {row[1] for row in chunk_rows(pg, task["id"])}
            gone = pg.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None
            if "running" not in states and "accepted" not in states and gone:
                break
            time.sleep(0.5)
        assert states <= {"successful", "dismissed"} and gone, (states, gone)
        assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "dismissed"
        assert pg.execute("SELECT count(*) FROM datasets").fetchone()[0] == before + 1  # only the input
        assert pg.execute("SELECT count(*) FROM analysis_results WHERE task_id = %s", (task["id"],)).fetchone()[0] == 0


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_chunk_runner_memory_is_bounded_by_the_chunk(database_url: str, pg: Any) -> None:
    """12,000 polygons of 200 vertices: run whole, the pool process's peak RSS grows by ~380 MB (measured: 624 MB
    for 20,000); in 300-feature chunks (60,000 vertices) by ~50 MB. The bound, 150 MB, is set from the chunk."""
    with isolated(database_url, concurrency=1, chunk_features="300", chunk_vertices="60000") as (
            client, worker, _e, _s):
        assert worker is not None
        angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
        ring = np.column_stack([np.cos(angles), np.sin(angles)]) * 0.004
        centres = np.random.default_rng(7).uniform([100, 30], [110, 40], size=(12_000, 2))
        polygons = shapely.polygons(ring[None, :, :] + centres[:, None, :])
        body = fc([feature(shapely.geometry.mapping(p), i=i) for i, p in enumerate(polygons)])
        r = client.post("/api/v1/datasets", json={"name": unique("big"), **body})
        assert r.status_code == 201, r.text
        child = worker.children()[0]
        Path(f"/proc/{child}/clear_refs").write_text("5")  # reset the high-water mark
        baseline = _hwm_kib(child)
        done = wait_final(client, submit(client, "buffer", {"input": {"dataset_id": r.json()["id"]},
                                                            "distance": {"value": 100, "unit": "m"}})["id"], 300)
        assert done["status"] == "successful" and done["chunks_total"] >= 40, done
        assert worker.children() == [child]
        grown_mib = (_hwm_kib(child) - baseline) / 1024
        assert grown_mib < 150, grown_mib
