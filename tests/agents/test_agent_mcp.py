"""A real MCP client (the ``mcp`` SDK's ``ClientSession``) against the server over stdio (``geoservice mcp`` as a
subprocess) and over streamable HTTP (a real uvicorn server): list tools, buffer a stored dataset with progress
notifications, check the result against PostGIS, and get a clear tool error for a bare-number distance."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.agents.conftest import new_api_key
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
TRANSPORTS = ["stdio", "http"]


@asynccontextmanager
async def mcp_session(transport: str, agent_env: dict[str, str], base_url: str, key: str
                      ) -> AsyncIterator[ClientSession]:
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=["-m", "geoservice.cli", "mcp"],
                                       env={**agent_env, "GEOSERVICE_MCP_API_KEY": key}, cwd=str(ROOT))
        with open(f"/tmp/geoservice-test-mcp-stdio-{key[-6:]}.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session
        return
    headers = {"X-API-Key": key}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http, \
            streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def scenario(session: ClientSession, dataset_id: str) -> dict[str, Any]:
    listed = await session.list_tools()
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    result = await session.call_tool("buffer", {"input": {"dataset_id": dataset_id},
                                                "distance": {"value": 2, "unit": "km"}},
                                     read_timeout_seconds=180, progress_callback=on_progress)
    bad = await session.call_tool("buffer", {"input": {"dataset_id": dataset_id}, "distance": 500})
    task_id = (result.structured_content or {}).get("task", {}).get("id")
    status = await session.call_tool("task_status", {"task_id": task_id}) if task_id else None
    return {"tools": listed.tools, "result": result, "updates": updates, "bad": bad, "status": status}


@pytest.fixture(scope="module")
def api_key(analyst: TestClient) -> str:
    return new_api_key(analyst)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mcp_buffer_with_progress_matches_postgis(transport: str, analyst: TestClient, places: dict, api_key: str,
                                                  agent_env: dict[str, str], api_server: str, worker: Any,
                                                  pg: Any) -> None:
    async def run() -> dict[str, Any]:
        async with mcp_session(transport, agent_env, api_server, api_key) as session:
            return await scenario(session, places["id"])

    out = anyio.run(run)
    tools = {t.name: t for t in out["tools"]}
    assert {"buffer", "overlay", "reproject", "list_datasets", "describe_dataset", "query_features", "task_status",
            "task_result"} <= set(tools)
    assert tools["buffer"].input_schema["properties"]["distance"]["required"] == ["value", "unit"]

    result = out["result"]
    assert not result.is_error, result.content
    body = result.structured_content
    assert body["status"] == "successful" and body["task"]["status"] == "successful"
    # progress notifications while the task ran: never going back, ending at 100
    progress = [p for p, _, _ in out["updates"]]
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == 100, out["updates"]
    assert all(total == 100 for _, total, _ in out["updates"])
    assert out["status"] is not None and out["status"].structured_content["result"]["status"] == "successful"

    shaped = body["result"]
    assert shaped["feature_count"] == 243 and shaped["complete"] is False and shaped["preview"]["features"]
    dataset_id = shaped["dataset_id"]
    assert dataset_id == body["task"]["result_dataset_id"]
    rows = pg.execute(
        "WITH s AS (SELECT fid, geometry g, (CASE WHEN ST_Y(geometry) >= 0 THEN 32600 ELSE 32700 END) "
        "+ floor((ST_X(geometry) + 180) / 6)::int + 1 AS utm FROM spatial_data WHERE dataset_id = %s) "
        "SELECT s.fid, ST_Area(ST_Transform(ST_Buffer(ST_Transform(s.g, s.utm), 2000, 'quad_segs=8'), 4326)"
        "::geography), ST_Area(r.geometry::geography) FROM s JOIN spatial_data r ON r.fid = s.fid "
        "WHERE r.dataset_id = %s", (places["id"], dataset_id)).fetchall()
    rel = np.array([abs(ours - ref) / ref for _, ref, ours in rows])
    assert len(rows) == 243 and rel.max() < 2e-3, rel.max()

    bad = out["bad"]
    assert bad.is_error and "unit" in bad.content[0].text and "distance" in bad.content[0].text
    assert bad.structured_content["field"] == "distance" and bad.structured_content["error"] == "InvalidInput"

    user_id = analyst.get("/api/v1/users/me").json()["id"]
    sessions = pg.execute("SELECT s.id, count(i.id) FROM agent_sessions s JOIN agent_tool_invocations i "
                          "ON i.session_id = s.id WHERE s.mode = %s AND s.user_id = %s GROUP BY s.id",
                          (f"mcp-{transport}", user_id)).fetchall()
    assert len(sessions) == 1 and sessions[0][1] == 3


def test_mcp_over_http_needs_an_api_key(api_server: str) -> None:
    for headers in ({}, {"X-API-Key": "gs_notakey_notakey"}, {"Authorization": "Bearer not-a-key"}):
        r = httpx.post(f"{api_server}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert r.json()["error"] == "Unauthorized"


def test_an_mcp_session_belongs_to_its_user(analyst: TestClient, other: TestClient, agent_env: dict[str, str],
                                            api_server: str, api_key: str) -> None:
    """Another user's key cannot use an MCP session id it learned."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    r = httpx.post(f"{api_server}/mcp", json=init, headers={**accept, "X-API-Key": api_key})
    assert r.status_code == 200, r.text
    session_id = r.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    theirs = httpx.post(f"{api_server}/mcp", json=ping, headers={
        **accept, "X-API-Key": new_api_key(other), "Mcp-Session-Id": session_id})
    assert theirs.status_code == 404
