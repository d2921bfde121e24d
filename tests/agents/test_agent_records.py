"""Sessions, invocations and events are persisted with every column filled as specified."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.agents.conftest import invoke, new_session, sse_events

pytestmark = pytest.mark.e2e
SESSION_COLUMNS = ["id", "user_id", "title", "mode", "status", "last_message_at", "created_at", "updated_at"]
INVOCATION_COLUMNS = ["id", "session_id", "user_id", "tool_id", "args", "status", "result", "error", "latency_ms",
                      "wrote_memory", "created_at", "finished_at"]
EVENT_COLUMNS = ["id", "session_id", "user_id", "kind", "payload", "created_at"]


def _rows(pg: Any, table: str, columns: list[str], where: str, value: str) -> list[dict[str, Any]]:
    rows = pg.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {where} = %s ORDER BY created_at",
                      (value,)).fetchall()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_every_column_is_filled(analyst: TestClient, squares: dict, places: dict, worker: Any, pg: Any) -> None:
    sid = new_session(analyst, "records")
    user_id = analyst.get("/api/v1/users/me").json()["id"]
    ok = invoke(analyst, sid, "describe_dataset", {"dataset_id": squares["id"]})
    bad = invoke(analyst, sid, "buffer", {"input": {"dataset_id": squares["id"]}, "distance": 5})
    args = {"input": {"dataset_id": places["id"]}, "distance": {"value": 100, "unit": "m"}}
    task = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "records-1"})
    replay = invoke(analyst, sid, "buffer", args, **{"Idempotency-Key": "records-1"})
    assert [ok.status_code, bad.status_code, task.status_code, replay.status_code] == [200, 422, 202, 202]
    sse_events(analyst, sid, until="task_finished")

    [session] = _rows(pg, "agent_sessions", SESSION_COLUMNS, "id", sid)
    assert all(v is not None for v in session.values()), session
    assert str(session["user_id"]) == user_id
    assert (session["mode"], session["status"], session["title"]) == ("rest", "active", "records")
    assert session["last_message_at"] > session["created_at"]

    invocations = _rows(pg, "agent_tool_invocations", INVOCATION_COLUMNS, "session_id", sid)
    assert [i["status"] for i in invocations] == ["succeeded", "failed", "submitted", "replayed"]
    for inv in invocations:
        filled = {k for k, v in inv.items() if v is not None}
        expected = set(INVOCATION_COLUMNS) - {"error" if inv["status"] != "failed" else "result"}
        assert filled == expected, inv
        assert inv["wrote_memory"] is False and inv["latency_ms"] >= 0 and inv["finished_at"] >= inv["created_at"]
        assert str(inv["user_id"]) == user_id
    assert invocations[1]["error"]["field"] == "distance" and invocations[1]["args"]["distance"] == 5
    assert invocations[2]["result"]["task"]["id"] == task.json()["task"]["id"]
    assert invocations[3]["result"]["replay_of"] == str(invocations[2]["id"])

    events = _rows(pg, "agent_events", EVENT_COLUMNS + ["seq"], "session_id", sid)
    for event in events:
        assert all(v is not None for v in event.values()), event
        assert str(event["user_id"]) == user_id and event["payload"]
    kinds = [e["kind"] for e in sorted(events, key=lambda e: e["seq"])]
    assert kinds.count("tool_call_started") == kinds.count("tool_call_finished") == 4
    assert kinds.count("task_finished") == 1 and "task_progress" in kinds
