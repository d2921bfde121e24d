"""Reads never write: GET and HEAD requests run in a read-only transaction, and every GET route answers in one.

The one write a read request may cause is an API key's ``last_used_at``, in its own transaction, at most once
a minute per key. (Every GET route with a path parameter is exercised read-only by the authorisation matrix
in tests/auth; the routes without one are swept here.)
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import InternalError

from geoservice.api.app import create_app
from geoservice.api.deps import CurrentUser, SessionDep
from geoservice.config import Settings
from geoservice.db.engine import ReadOnlyViolation, read_only
from geoservice.db.models import AgentSession
from tests.auth.test_authz_matrix import PUBLIC, app_routes, has_params
from tests.conftest import authed_client


def test_a_read_only_session_refuses_orm_and_sql_writes(factory: Any, client: TestClient) -> None:
    me = uuid.UUID(client.get("/api/v1/users/me").json()["id"])
    with factory() as session:
        read_only(session)
        session.add(AgentSession(user_id=me, title="x", mode="rest", status="active"))
        with pytest.raises(ReadOnlyViolation, match="AgentSession"):
            session.flush()
        session.rollback()
    with factory() as session:
        read_only(session)
        with pytest.raises(InternalError, match="read-only transaction"):
            session.execute(text("UPDATE users SET phone = 'x' WHERE id = :id"), {"id": me})
    with factory() as session:  # a fresh session is writable again: the pool does not keep the flag
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"


def test_every_get_route_without_a_path_parameter_reads_only(app: Any, settings: Settings, pg: Any) -> None:
    """As an admin authenticated by API key (the path that records a key's use), every GET answers 200."""
    admin = authed_client(app, settings, ["admin"])
    try:
        created = admin.post("/api/v1/users/me/api-keys", json={"name": "reads"}).json()
        swept = 0
        for method, path in app_routes(app):
            if method != "GET" or has_params(path) or (method, path) in PUBLIC:
                continue
            r = admin.get(path, headers={"Authorization": "", "X-API-Key": created["key"]})
            assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
            swept += 1
    finally:
        admin.__exit__(None, None, None)
    assert swept >= 10
    used = pg.execute("SELECT last_used_at FROM user_credentials WHERE id = %s", (created["id"],)).fetchone()[0]
    assert used is not None  # recorded, in a transaction of its own


def test_api_key_use_is_recorded_at_most_once_a_minute(client: TestClient, pg: Any) -> None:
    created = client.post("/api/v1/users/me/api-keys", json={"name": "touch"}).json()
    key, key_id = created["key"], created["id"]

    def last_used() -> Any:
        return pg.execute("SELECT last_used_at FROM user_credentials WHERE id = %s", (key_id,)).fetchone()[0]

    headers = {"Authorization": "", "X-API-Key": key}
    assert last_used() is None
    assert client.get("/api/v1/datasets", headers=headers).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/v1/tasks", headers=headers).status_code == 200
    assert last_used() == first  # within the minute: not written again
    pg.execute("UPDATE user_credentials SET last_used_at = now() - interval '2 minutes' WHERE id = %s", (key_id,))
    assert client.get("/api/v1/tasks", headers=headers).status_code == 200
    assert last_used() > first


def test_a_get_handler_that_writes_fails_instead_of_writing(settings: Settings, pg: Any) -> None:
    """The guard in the session dependency itself: a GET handler that flushes a row gets a 500, nothing stored."""
    probe = create_app(settings)
    title = f"written by a GET {uuid.uuid4().hex[:6]}"

    @probe.get("/probe/write")
    def write(session: SessionDep, principal: CurrentUser) -> dict[str, str]:
        session.add(AgentSession(user_id=principal.user_id, title=title, mode="rest", status="active"))
        session.flush()
        return {"wrote": "yes"}

    @probe.post("/probe/write")
    def write_post(session: SessionDep, principal: CurrentUser) -> dict[str, str]:
        return write(session, principal)

    c = authed_client(probe, settings)
    try:
        with pytest.raises(ReadOnlyViolation):  # a 500 to the client; the test client re-raises it
            c.get("/probe/write")
        assert pg.execute("SELECT count(*) FROM agent_sessions WHERE title = %s", (title,)).fetchone()[0] == 0
        assert c.post("/probe/write").status_code == 200  # the same handler may write on a POST
        assert pg.execute("SELECT count(*) FROM agent_sessions WHERE title = %s", (title,)).fetchone()[0] == 1
    finally:
        c.__exit__(None, None, None)
