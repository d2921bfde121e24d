"""Tasks survive crashes and retries: kill tests, duplicate delivery, cancel, time limits, the sweeper.

Each test runs its own worker process on its own queue, so it knows which worker got the task.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from fastapi.testclient import TestClient

from geoservice.config import Settings
from geoservice.queue import CeleryTaskQueue
from tests.conftest import REDIS_URL, WorkerProcess, authed_client, settings_env
from tests.e2e.test_tasks import submit, wait_final, wait_status
from tests.helpers import fc, feature

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

POINTS = fc([feature({"type": "Point", "coordinates": [float(i % 360 - 180), float(i % 170 - 85)]}, i=i)
             for i in range(200)])


@contextmanager
def isolated(database_url: str, concurrency: int = 1, start: bool = True, **overrides: str
             ) -> Iterator[tuple[TestClient, WorkerProcess | None, dict[str, str], Settings]]:
    from geoservice.api.app import create_app

    queue = f"geoservice-test-{uuid.uuid4().hex[:8]}"
    env = settings_env(database_url, queue, **overrides)
    settings = Settings(**{k.removeprefix("GEOSERVICE_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    worker = WorkerProcess(env, concurrency) if start else None
    try:
        if worker:
            worker.wait_ready(redis.Redis.from_url(REDIS_URL), queue)
        client = authed_client(create_app(settings), settings)
        try:
            yield client, worker, env, settings
        finally:
            client.__exit__(None, None, None)
    finally:
        if worker:
            worker.stop()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=f"*{queue}*"):
            r.delete(key)


def slow(seconds: float) -> dict:
    return {"input": {"geojson": POINTS}, "target_crs": "EPSG:3857", "seconds": seconds}


def result_sets(pg, task_id: str) -> tuple[int, int]:
    """(analysis_results rows, datasets made by this task)."""
    return pg.execute(
        "SELECT (SELECT count(*) FROM analysis_results WHERE task_id = %s), "
        "(SELECT count(*) FROM datasets WHERE source->>'task_id' = %s)", (task_id, task_id)).fetchone()


def running(task: dict) -> bool:
    return task["status"] == "running" and task["phase"] == "computing" and float(task["progress"]) > 12


def test_sigkill_pool_child_redelivers_at_once(database_url, pg):
    with isolated(database_url, concurrency=1) as (client, worker, _, _s):
        task = submit(client, "slow_reproject", slow(6))
        wait_status(client, task["id"], running)
        children = worker.children()
        assert len(children) == 1
        killed_at = time.monotonic()
        os.kill(children[0], signal.SIGKILL)
        done = wait_final(client, task["id"], timeout=60)
        assert done["status"] == "successful", (done, worker.output()[-3000:])
        # Redelivered at once: well before the 6 s lease could expire and the sweeper step in.
        restarted = [e for k, e in done["_events"] if e["status"] == "running"]
        assert restarted
        assert time.monotonic() - killed_at < 6 + 6 + 5
        assert done["attempts"] == 2
        assert result_sets(pg, task["id"]) == (1, 1)


def test_sigkill_whole_worker_redelivers_after_visibility_timeout(database_url, pg):
    overrides = {"broker_visibility_timeout_s": "12", "task_hard_time_limit_s": "10", "task_soft_time_limit_s": "8"}
    with isolated(database_url, concurrency=1, **overrides) as (client, worker, env, _s):
        task = submit(client, "slow_reproject", slow(4))
        wait_status(client, task["id"], running)
        worker.kill()
        assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "running"
        second = WorkerProcess(env, 1)
        try:
            second.wait_ready(redis.Redis.from_url(REDIS_URL), env["GEOSERVICE_TASK_QUEUE"])
            done = wait_final(client, task["id"], timeout=90)
            assert done["status"] == "successful", (done, second.output()[-3000:])
            assert done["attempts"] == 2
            assert result_sets(pg, task["id"]) == (1, 1)
        finally:
            second.stop()


def test_duplicate_delivery_is_detected_and_skipped(database_url, pg):
    with isolated(database_url, concurrency=2) as (client, worker, _, settings):
        task = submit(client, "slow_reproject", slow(4))
        wait_status(client, task["id"], running)
        queue = CeleryTaskQueue(settings)
        queue.send(uuid.UUID(task["id"]))  # the same task delivered again while it runs
        queue.close()
        done = wait_final(client, task["id"])
        assert done["status"] == "successful" and done["attempts"] == 1
        time.sleep(1)
        assert "delivery skipped" in worker.output()
        assert result_sets(pg, task["id"]) == (1, 1)


def test_cancel_stops_running_task(database_url, pg):
    with isolated(database_url, concurrency=1) as (client, worker, _, _s):
        task = submit(client, "slow_reproject", slow(30))
        wait_status(client, task["id"], running)
        r = client.post(f"/api/v1/tasks/{task['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "dismissed"
        # The work stops, not only the record: the single pool slot runs the next task within seconds.
        started = time.monotonic()
        nxt = submit(client, "reproject", {"input": {"geojson": POINTS}, "target_crs": 3857})
        assert wait_final(client, nxt["id"], timeout=20)["status"] == "successful"
        assert time.monotonic() - started < 10
        final = client.get(f"/api/v1/tasks/{task['id']}").json()
        assert final["status"] == "dismissed"
        assert result_sets(pg, task["id"]) == (0, 0)
        again = client.post(f"/api/v1/tasks/{task['id']}/cancel")  # idempotent
        assert again.status_code == 200 and again.json()["status"] == "dismissed"
        assert client.post(f"/api/v1/tasks/{nxt['id']}/cancel").status_code == 409  # already successful


def test_cancel_accepted_task_never_runs(database_url, pg):
    with isolated(database_url, start=False) as (client, _w, _, _s):
        task = submit(client, "reproject", {"input": {"geojson": POINTS}, "target_crs": 3857})
        assert client.post(f"/api/v1/tasks/{task['id']}/cancel").json()["status"] == "dismissed"
        assert result_sets(pg, task["id"]) == (0, 0)


def test_soft_time_limit_fails_with_reason(database_url, pg):
    overrides = {"task_soft_time_limit_s": "3", "task_hard_time_limit_s": "8", "broker_visibility_timeout_s": "10"}
    with isolated(database_url, concurrency=1, **overrides) as (client, _w, _, _s):
        task = submit(client, "slow_reproject", slow(20))
        done = wait_final(client, task["id"], timeout=30)
        assert done["status"] == "failed" and done["error_code"] == "TimeLimitExceeded"
        assert "time limit of 3 s" in done["error_message"]
        assert result_sets(pg, task["id"]) == (0, 0)


def test_sweeper_sends_tasks_that_never_reached_the_broker(database_url, pg):
    with isolated(database_url, start=False) as (client, _w, env, settings):
        from geoservice.db.engine import make_engine, make_sessionmaker, transaction
        from geoservice.services import analyses
        from geoservice.services.auth import principal_for_user

        me = client.get("/api/v1/users/me").json()["id"]
        engine = make_engine(settings, "cli")
        with transaction(make_sessionmaker(engine)) as session:  # committed, never sent
            principal = principal_for_user(session, uuid.UUID(me))
            prepared = analyses.prepare(session, principal, "reproject", {"input": {"geojson": POINTS},
                                                                          "target_crs": 3857}, plugins="")
            task = analyses.submit(session, settings, principal, prepared, name="lost", description=None)
            task_id = str(task.id)
        engine.dispose()
        pg.execute("UPDATE analysis_tasks SET created_at = now() - interval '1 minute' WHERE id = %s", (task_id,))
        worker = WorkerProcess(env, 1)
        try:
            worker.wait_ready(redis.Redis.from_url(REDIS_URL), env["GEOSERVICE_TASK_QUEUE"])
            done = wait_final(client, task_id, timeout=60)
            assert done["status"] == "successful"
            assert "sweeper re-sent task" in worker.output()
        finally:
            worker.stop()


def test_task_over_max_attempts_fails_with_message(database_url, pg):
    # A task whose worker was lost on its last attempt (simulated: lease expired, attempts used up).
    with isolated(database_url, concurrency=1) as (client, _w, _, _s):
        task = submit(client, "slow_reproject", slow(30))
        wait_status(client, task["id"], running)
        pg.execute("UPDATE analysis_tasks SET attempts = max_attempts, lease_owner = 'gone:1:x', "
                   "lease_expires_at = now() - interval '1 second' WHERE id = %s", (task["id"],))
        done = wait_status(client, task["id"], lambda t: t["status"] == "failed", timeout=30)
        assert done["error_code"] == "MaxAttemptsExceeded"
        assert "gave up after 3 attempts" in done["error_message"]
        assert result_sets(pg, task["id"]) == (0, 0)
