"""Fixtures of the SuperMap surface tests: a real uvicorn server and the real iClient under Node.

``live_server`` runs ``geoservice api`` (uvicorn serving ``create_app(settings)``) as a child process on
a free loopback port, with the test run's database and queue: the iClient needs a real HTTP server.
``iclient`` installs the harness's npm packages (``npm ci`` from the committed lock file) when
``node_modules`` is missing, and returns a function that runs a list of calls through the real
``@supermap/iclient-common`` (bundled with esbuild, see tests/supermap/iclient/harness.mjs).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, settings_env, stop_process_group

HARNESS = Path(__file__).resolve().parent / "iclient"
SERVICE = "/iserver/services/spatialanalyst-sample/restjsr/spatialanalyst"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``geoservice api`` on a free port, in its own process group; its log in /tmp."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="geoservice-supermap-api-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geoservice.cli", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API server did not start: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


@pytest.fixture(scope="session")
def live_server(database_url: str, queue_name: str) -> Iterator[LiveServer]:
    server = LiveServer(settings_env(database_url, queue_name))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def token(client: TestClient) -> str:
    """The test user's access token (iServer clients send it as ``?token=``)."""
    return client.headers["Authorization"].split(" ", 1)[1]


def _npm_install() -> None:
    if (HARNESS / "node_modules" / "@supermap" / "iclient-common").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("Node.js 20 and npm are needed to drive the real iClient (apt-get install nodejs npm)")
    command = [npm, "ci", "--no-audit", "--no-fund"] if (HARNESS / "package-lock.json").exists() else \
        [npm, "install", "--no-audit", "--no-fund"]
    done = subprocess.run(command, cwd=HARNESS, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"npm install of the iClient harness failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


IClient = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def iclient(live_server: LiveServer, token: str) -> IClient:
    """Run calls through the real iClient against the live server; returns one answer per call."""
    _npm_install()
    url = f"{live_server.url}{SERVICE}?token={token}"

    def run(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(calls, f)
        try:
            done = subprocess.run(["node", str(HARNESS / "harness.mjs"), url, f.name], capture_output=True,
                                  text=True, timeout=600)
        finally:
            os.unlink(f.name)
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout.strip().splitlines()[-1])
        assert len(answers) == len(calls)
        return answers

    return run
