"""Fixtures for the agent layer: an app whose analyses go to tasks above 100 input features, a real uvicorn
server (MCP over streamable HTTP needs a real HTTP server), and datasets small and large."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from geoservice.config import Settings
from tests.conftest import ROOT, SAMPLE, authed_client, settings_env
from tests.helpers import fc, feature, square, unique, upload

#: 100 features: the 243 populated places become a task, a few squares run in-process.
AGENT_ENV = {"agent_sync_max_features": "100", "mcp_poll_interval_s": "0.1", "agent_idempotency_wait_s": "3"}


@pytest.fixture(scope="session")
def agent_env(database_url: str, queue_name: str) -> dict[str, str]:
    return settings_env(database_url, queue_name, **AGENT_ENV)


@pytest.fixture(scope="session")
def agent_settings(agent_env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("GEOSERVICE_").lower(): v for k, v in agent_env.items()})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def agent_app(agent_settings: Settings) -> Any:
    from geoservice.api.app import create_app

    return create_app(agent_settings)


@pytest.fixture(scope="module")
def analyst(agent_app: Any, agent_settings: Settings) -> Iterator[TestClient]:
    """An analyst (a fresh user per module) on the agent app, with a Bearer token."""
    c = authed_client(agent_app, agent_settings)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def other(agent_app: Any, agent_settings: Settings) -> Iterator[TestClient]:
    """Another analyst: must never see the first one's sessions."""
    c = authed_client(agent_app, agent_settings)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def places(analyst: TestClient) -> dict[str, Any]:
    """243 points: large enough to become a task."""
    r = upload(analyst, "p.geojson", (SAMPLE / "populated_places.geojson").read_bytes(), name=unique("ag_places"))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def squares(analyst: TestClient) -> dict[str, Any]:
    """Three 0.1-degree squares near the equator: small enough to run in-process."""
    body = fc([feature(square(0.1 + i, 0.2 + i, 0.1), k=i, name=f"sq{i}") for i in range(3)], name=unique("ag_sq"))
    r = analyst.post("/api/v1/datasets", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def new_session(client: TestClient, title: str = "test") -> str:
    r = client.post("/api/v1/agent/sessions", json={"title": title})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def invoke(client: Any, session_id: str, tool: str, args: Any, **headers: str) -> Any:
    return client.post(f"/api/v1/agent/sessions/{session_id}/tools/{tool}/invoke", json=args, headers=headers)


def new_api_key(client: TestClient, roles: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": unique("key")} | ({"roles": roles} if roles is not None else {})
    r = client.post("/api/v1/users/me/api-keys", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def sse_events(client: Any, session_id: str, *, after: int | None = None, headers: dict[str, str] | None = None,
               until: str | None = None, timeout: float = 120) -> list[dict[str, Any]]:
    """Read the session's events: the backlog (``until=None``), or follow until an event of kind ``until``."""
    import orjson

    params: dict[str, Any] = {"interval": 0.2, "follow": "true" if until else "false"}
    if after is not None:
        params["after"] = after
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/v1/agent/sessions/{session_id}/events", params=params, headers=headers or {},
                       timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id:"):
                current["sse_id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                events.append({**current, **orjson.loads(line[5:])})
                if until is not None and current.get("event") == until:
                    break
                current = {}
    return events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def api_server(agent_env: dict[str, str]) -> Iterator[str]:
    """``create_app()`` served by a real uvicorn process on a free loopback port; yields its base URL."""
    port = _free_port()
    log = open(f"/tmp/geoservice-test-uvicorn-{port}.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "geoservice.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        cwd=ROOT, env={**os.environ, **agent_env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start: {Path(log.name).read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
