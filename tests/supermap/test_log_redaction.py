"""The real API server's log (uvicorn's access log included) never holds a credential sent in a URL."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.supermap.conftest import LiveServer


def test_access_log_redacts_url_tokens(live_server: LiveServer, token: str) -> None:
    marker = "redaction-check"
    r = httpx.get(f"{live_server.url}/iserver/services.json", params={"token": token, "probe": marker}, timeout=30)
    assert r.status_code == 200, r.text
    # a token in the URL of a native route is refused (401), and is not logged either
    r = httpx.get(f"{live_server.url}/api/v1/datasets", params={"token": token, "probe": marker}, timeout=30)
    assert r.status_code == 401
    log = Path(live_server.log.name).read_text(errors="replace")
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) >= 2, log[-2000:]  # the access log did record both requests
    assert token not in log
    assert all("token=[REDACTED]" in line for line in lines), lines
