"""Rate limits shared across API processes (in Redis) and Idempotency-Keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.agents.conftest import invoke, new_session

pytestmark = pytest.mark.e2e
RATE = 5  # calls per second set on the tool for the test
DRIVE = 3 * RATE
SECONDS = 10.0


@pytest.fixture
def limited_tool(pg: Any) -> Iterator[str]:
    """``describe_dataset`` limited to RATE calls per second (restored afterwards)."""
    old = pg.execute("SELECT rate_limit_qps FROM agent_tools WHERE name = 'describe_dataset'").fetchone()[0]
    pg.execute("UPDATE agent_tools SET rate_limit_qps = %s WHERE name = 'describe_dataset'", (RATE,))
    yield "describe_dataset"
    pg.execute("UPDATE agent_tools SET rate_limit_qps = %s WHERE name = 'describe_dataset'", (old,))


def test_rate_limit_is_shared_by_processes_and_admits_the_configured_rate(
        analyst: TestClient, squares: dict, api_server: str, limited_tool: str, pg: Any) -> None:
    """Drive the tool at 3x its rate for 10 s, alternating between this process's app and a uvicorn process.

    The bucket is emptied first (its burst spent), so what is measured is the sustained rate it admits.
    """
    sid = new_session(analyst)
    remote = httpx.Client(base_url=api_server, headers={"Authorization": analyst.headers["Authorization"]},
                          timeout=30)
    targets = [analyst, remote]
    args = {"dataset_id": squares["id"]}
    drained = 0
    while invoke(targets[drained % 2], sid, limited_tool, args).status_code == 200:  # spend the burst
        drained += 1
    assert RATE <= drained <= 3 * RATE
    t0 = time.monotonic()

    def call(i: int) -> tuple[float, int, str | None]:
        delay = t0 + i / DRIVE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic() - t0
        r = invoke(targets[i % 2], sid, limited_tool, args)
        return sent, r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(int(DRIVE * SECONDS))))
    remote.close()
    span = max(sent for sent, _, _ in results) + 1 / DRIVE
    statuses = [status for _, status, _ in results]
    admitted = statuses.count(200)
    assert len(results) / span >= 2.5 * RATE, f"the driver fell behind: {len(results)} calls in {span:.1f} s"
    assert set(statuses) == {200, 429}
    assert abs(admitted / span - RATE) <= 0.1 * RATE, (admitted, span)
    assert all(retry is not None and int(retry) >= 1 for _, status, retry in results if status == 429)
    # both processes answered 429s (one bucket), and every call was recorded
    assert {statuses[i] for i in range(0, len(statuses), 2)} == {200, 429}
    assert {statuses[i] for i in range(1, len(statuses), 2)} == {200, 429}
    recorded = dict(pg.execute("SELECT status, count(*) FROM agent_tool_invocations WHERE session_id = %s "
                               "GROUP BY status", (sid,)).fetchall())
    assert recorded == {"succeeded": admitted + drained, "rejected": len(statuses) - admitted + 1}


def test_same_key_twice_runs_one_task(analyst: TestClient, places: dict, worker: Any, pg: Any) -> None:
    sid = new_session(analyst)
    args = {"input": {"dataset_id": places["id"]}, "distance": {"value": 300, "unit": "m"}}
    first = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "retry-me-1"})
    assert first.status_code == 202, first.text
    again = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "retry-me-1"})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["task"]["id"] == first.json()["task"]["id"]
    assert again.json()["replayed"] is True and again.json()["replay_of"] == first.json()["invocation_id"]
    tasks = pg.execute("SELECT count(*) FROM analysis_tasks WHERE description = %s",
                       (f"agent tool call {first.json()['invocation_id']}",)).fetchone()[0]
    assert tasks == 1
    assert pg.execute("SELECT count(*) FROM analysis_tasks WHERE description LIKE 'agent tool call %%' AND "
                      "created_by = (SELECT user_id FROM agent_sessions WHERE id = %s)", (sid,)).fetchone()[0] == 1
    rows = pg.execute("SELECT status, task_id::text FROM agent_tool_invocations WHERE session_id = %s "
                      "ORDER BY created_at", (sid,)).fetchall()
    assert rows[:2] == [("submitted", first.json()["task"]["id"]), ("replayed", first.json()["task"]["id"])]
    # the same key with other arguments is refused, and runs nothing
    other = invoke(analyst, sid, "buffer", {**args, "distance": {"value": 301, "unit": "m"}},
                   **{"Idempotency-Key": "retry-me-1"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key", other.text
    third = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "retry-me-1"})  # the key still holds
    assert third.json()["replayed"] is True and third.json()["task"]["id"] == first.json()["task"]["id"]
    # a key is scoped to the tool: the same key on another tool is a new call
    listed = invoke(analyst, sid, "list_datasets", {}, **{"Idempotency-Key": "retry-me-1"})
    assert listed.status_code == 200 and listed.json()["replayed"] is False


def test_in_process_calls_replay_too(analyst: TestClient, squares: dict, pg: Any) -> None:
    sid = new_session(analyst)
    args = {"input": {"dataset_id": squares["id"]}, "distance": {"value": 50, "unit": "m"}}
    first = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "sync-1"})
    again = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "sync-1"})
    assert first.status_code == again.status_code == 200
    assert again.json()["result"] == first.json()["result"] and again.json()["replay_of"] == first.json()[
        "invocation_id"]
    # a failed call does not hold its key: fixing the arguments with the same key runs
    bad = invoke(analyst, sid, "buffer", {**args, "distance": 50}, **{"Idempotency-Key": "sync-2"})
    assert bad.status_code == 422
    fixed = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "sync-2"})
    assert fixed.status_code == 200 and fixed.json()["replayed"] is False
