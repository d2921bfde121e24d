"""Authorisation matrix generated from ``app.routes``: every route with a path parameter, every method, as the
owner of the object, another analyst, an agent API key of a third user, an admin, and anonymous.

``EXPECT`` holds, per (method, path), how to make a fresh object of the owner's (with a minimal valid body)
and the status each caller gets. ``test_every_route_with_a_path_parameter_is_in_the_table`` compares the
table with the routes the app really has, so a new route with a path parameter fails until it is added.

Foreign callers act first, on the very object the owner then uses (so the owner's success also proves the
foreign attempt changed nothing); the admin gets an object of its own. Objects another caller may not see are
404, and that 404 must look exactly like the one for an id that does not exist. Admins see and change every
dataset and task; agent sessions stay private to their user (admins too get 404).

The SuperMap iServer surface (``/iserver/...``) is in the table too, with iServer's conventions: every error
is ``{"succeed": false, "error": {"code": <status>, "errorMsg": ...}}``; a dataset is named ``name@source``
and resolved among the caller's own datasets, so someone else's name is iServer's "does not exist" (400);
any service name works; the catch-all answers 404 (405, or 204 for a CORS preflight) without credentials.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from tests.auth.conftest import World
from tests.conftest import make_user
from tests.helpers import unique

OWNER, OTHER, AGENT, ADMIN, ANON = "owner", "other", "agent", "admin", "anonymous"
FOREIGN = (ANON, OTHER, AGENT)
ISERVER = "/iserver/"
SUFFIXES = ("", ".json", ".rjson")
# Routes anyone may call without credentials.
PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("POST", "/api/v1/auth/register"),  # closed unless registration is open, or for admins (test_registration)
    ("POST", "/api/v1/auth/token"), ("POST", "/api/v1/auth/refresh"),
    ("POST", "/iserver/services/security/tokens"), ("POST", "/iserver/services/security/tokens.json"),
}


def app_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves (HEAD aside), read from ``app.routes``, included routers expanded."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(contexts(app.routes)) if contexts else list(app.routes)
    out = {(m, r.path) for r in routes if getattr(r, "path", None) for m in (getattr(r, "methods", None) or ())
           if m != "HEAD"}
    assert ("GET", "/api/v1/datasets/{dataset_id}") in out, "route enumeration is broken"
    return sorted(out)


def has_params(path: str) -> bool:
    return "{" in path


def _url(path: str, params: dict[str, str]) -> str:
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: params[m.group(1)], path)


def _call(client: TestClient, method: str, path: str, target: Target) -> Any:
    return client.request(method, _url(path, target.params), json=target.json, params=target.query)


def check_error_body(path: str, r: Any) -> None:
    """The native API's ``{"error", "detail"}``, or iServer's ``{"succeed": false, "error": {code, errorMsg}}``."""
    body = r.json()
    if path.startswith(ISERVER):
        assert body["succeed"] is False and body["error"]["code"] == r.status_code, body
        assert isinstance(body["error"]["errorMsg"], str) and body["error"]["errorMsg"], body
    else:
        assert isinstance(body["error"], str) and body["detail"], body


def _nonexistent(params: dict[str, str]) -> dict[str, str]:
    """The same parameters naming nothing: fresh UUIDs, fresh names."""
    out = {}
    for name, value in params.items():
        try:
            uuid.UUID(value)
            out[name] = str(uuid.uuid4())
        except ValueError:
            out[name] = unique("missing")
    return out


def error_shape(path: str, body: Any) -> Any:
    """An error body without its message (which may echo the id asked for)."""
    if path.startswith(ISERVER):
        return body["succeed"], body["error"]["code"]
    return {k: v for k, v in body.items() if k != "detail"}


# --- objects and expectations -------------------------------------------------------------------------

@dataclass
class Target:
    """A fresh object of the owner's: path parameters, a minimal valid body, and a check that it is intact."""

    params: dict[str, str]
    json: Any = None
    intact: Callable[[], None] | None = None
    query: dict[str, str] | None = None


Maker = Callable[[World, str], Target]  # (world, the actor who will use it) -> target


@dataclass(frozen=True)
class Case:
    make: Maker
    expect: dict[str, int]
    worker: bool = False


def mine(ok: int, foreign: int = 404) -> dict[str, int]:
    """Owner and admin succeed; other users and agents are told the object does not exist."""
    return {OWNER: ok, ADMIN: ok, OTHER: foreign, AGENT: foreign, ANON: 401}


def own_namespace(ok: int, missing: int) -> dict[str, int]:
    """``/users/me/...``: the id names the caller's own object; foreigners reach their own (empty) namespace."""
    return {OWNER: ok, ADMIN: missing, OTHER: missing, AGENT: missing, ANON: 401}


def admin_only(ok: int) -> dict[str, int]:
    return {OWNER: 403, OTHER: 403, AGENT: 403, ANON: 401, ADMIN: ok}


def dataset_intact(w: World, dataset_id: str, shared: list[str] | None = None) -> Callable[[], None]:
    def check() -> None:
        r = w.owner.client.get(f"/api/v1/datasets/{dataset_id}")
        assert r.status_code == 200, r.text
        assert r.json()["description"] is None and r.json()["is_public"] is False
        shares = w.owner.client.get(f"/api/v1/datasets/{dataset_id}/shares").json()
        assert [s["username"] for s in shares] == (shared or [])
    return check


def dataset(body: Callable[[World], Any] | None = None) -> Maker:
    def make(w: World, _actor: str) -> Target:
        d = w.new_dataset()
        return Target({"dataset_id": d}, body(w) if body else None, dataset_intact(w, d))
    return make


def shared_dataset(w: World, _actor: str) -> Target:
    d = w.new_dataset(shared_with=w.sharee.username)
    return Target({"dataset_id": d, "user_id": w.sharee.user_id or ""}, None,
                  dataset_intact(w, d, [w.sharee.username or ""]))


def task(slow: bool = False) -> Maker:
    def make(w: World, _actor: str) -> Target:
        t = w.new_task(slow=slow)

        def check() -> None:
            status = w.owner.client.get(f"/api/v1/tasks/{t}").json()["status"]
            assert status in ({"accepted", "running"} if slow else {"successful"}), status
        return Target({"task_id": t}, None, check)
    return make


def preference(json: Any = None) -> Maker:
    def make(w: World, _actor: str) -> Target:
        key = w.new_preference("EPSG:2263")

        def check() -> None:
            r = w.owner.client.get(f"/api/v1/users/me/preferences/{key}")
            assert r.status_code == 200 and r.json()["value"] == "EPSG:2263", r.text
        return Target({"key": key}, json, check)
    return make


def api_key(w: World, _actor: str) -> Target:
    key_id = w.new_api_key()

    def check() -> None:
        keys = {k["id"]: k for k in w.owner.client.get("/api/v1/users/me/api-keys").json()}
        assert keys[key_id]["revoked_at"] is None
    return Target({"key_id": key_id}, None, check)


def user(json: Any = None, role: str | None = None) -> Maker:
    """Non-admins aim at the owner's own account (self-promotion must fail too); the admin at a fresh user."""
    def make(w: World, actor: str) -> Target:
        if actor == ADMIN:
            target_id = make_user(w.settings, ["viewer", "analyst"])[0]
        else:
            target_id = w.owner.user_id or ""
        params = {"user_id": target_id} | ({"role": role} if role else {})

        def check() -> None:
            r = w.admin.client.get(f"/api/v1/users/{target_id}")
            assert r.json()["roles"] == ["analyst"] and r.json()["phone"] is None, r.text
        return Target(params, json, check)
    return make


EXPECT: dict[tuple[str, str], Case] = {
    ("GET", "/api/v1/datasets/{dataset_id}"): Case(dataset(), mine(200)),
    ("PATCH", "/api/v1/datasets/{dataset_id}"): Case(dataset(lambda w: {"description": "changed"}), mine(200)),
    ("DELETE", "/api/v1/datasets/{dataset_id}"): Case(dataset(), mine(204)),
    ("GET", "/api/v1/datasets/{dataset_id}/features"): Case(dataset(), mine(200)),
    ("GET", "/api/v1/datasets/{dataset_id}/export"): Case(dataset(), mine(200)),
    ("GET", "/api/v1/datasets/{dataset_id}/shares"): Case(dataset(), mine(200)),
    ("POST", "/api/v1/datasets/{dataset_id}/shares"): Case(dataset(lambda w: {"username": w.sharee.username}),
                                                          mine(201)),
    ("DELETE", "/api/v1/datasets/{dataset_id}/shares/{user_id}"): Case(shared_dataset, mine(204)),
    ("GET", "/api/v1/tasks/{task_id}"): Case(task(), mine(200), worker=True),
    ("GET", "/api/v1/tasks/{task_id}/results"): Case(task(), mine(200), worker=True),
    ("GET", "/api/v1/tasks/{task_id}/events"): Case(task(), mine(200), worker=True),
    ("POST", "/api/v1/tasks/{task_id}/cancel"): Case(task(slow=True), mine(200), worker=True),
    ("GET", "/api/v1/users/me/preferences/{key}"): Case(preference(), own_namespace(200, 404)),
    # PUT by someone else writes *their* preference of that name: 200, and the owner's value is untouched.
    ("PUT", "/api/v1/users/me/preferences/{key}"): Case(preference({"value": "EPSG:3857"}), own_namespace(200, 200)),
    ("DELETE", "/api/v1/users/me/preferences/{key}"): Case(preference(), own_namespace(204, 404)),
    # Admins may revoke anyone's key (by id); other users and agents cannot see it.
    ("DELETE", "/api/v1/users/me/api-keys/{key_id}"): Case(api_key, mine(204)),
    ("GET", "/api/v1/users/{user_id}"): Case(user(), admin_only(200)),
    ("PATCH", "/api/v1/users/{user_id}"): Case(user({"phone": "+1 555 0100"}), admin_only(200)),
    ("POST", "/api/v1/users/{user_id}/roles"): Case(user({"role": "admin"}), admin_only(200)),
    ("DELETE", "/api/v1/users/{user_id}/roles/{role}"): Case(user(role="analyst"), admin_only(200)),
}


# --- agent sessions: private to their user, admins included -------------------------------------------

def private(ok: int) -> dict[str, int]:
    return {OWNER: ok, ADMIN: 404, OTHER: 404, AGENT: 404, ANON: 401}


def agent_session(json: Any = None, query: dict[str, str] | None = None, tool: str | None = None) -> Maker:
    def make(w: World, _actor: str) -> Target:
        r = w.owner.client.post("/api/v1/agent/sessions", json={"title": unique("authz")})
        assert r.status_code == 201, r.text
        session_id = r.json()["id"]

        def check() -> None:
            assert w.owner.client.get(f"/api/v1/agent/sessions/{session_id}").json()["status"] == "active"
            assert w.owner.client.get(f"/api/v1/agent/sessions/{session_id}/invocations").json()["count"] == 0
        return Target({"session_id": session_id} | ({"name": tool} if tool else {}), json, check, query)
    return make


AGENT_SESSION = "/api/v1/agent/sessions/{session_id}"
EXPECT.update({
    ("GET", AGENT_SESSION): Case(agent_session(), private(200)),
    ("GET", AGENT_SESSION + "/events"): Case(agent_session(query={"follow": "false"}), private(200)),
    ("GET", AGENT_SESSION + "/invocations"): Case(agent_session(), private(200)),
    ("POST", AGENT_SESSION + "/close"): Case(agent_session(), private(200)),
    ("POST", AGENT_SESSION + "/tools/{name}/invoke"): Case(agent_session({}, tool="list_datasets"), private(200)),
})


# --- the SuperMap iServer surface ---------------------------------------------------------------------

SM = "/iserver/services/{service}"
ANALYST = SM + "/restjsr/spatialanalyst"
SERVICE_NAME = "spatialanalyst-geoservice"


def _region(x: float, y: float, size: float = 1.0) -> dict[str, Any]:
    pts = [(x, y), (x + size, y), (x + size, y + size), (x, y + size), (x, y)]
    return {"id": 0, "type": "REGION", "parts": [5], "points": [{"x": a, "y": b} for a, b in pts], "style": None,
            "prjCoordSys": {"epsgCode": 4326}}


_BUFFER_PARAMS = {"endType": "ROUND", "leftDistance": {"exp": None, "value": 100},
                  "rightDistance": {"exp": None, "value": 100}, "semicircleLineSegment": 10, "radiusUnit": "METER"}
ISERVER_BODIES: dict[str, Any] = {
    ANALYST + "/geometry/buffer": {
        "sourceGeometry": {"id": 0, "type": "POINT", "parts": [1], "points": [{"x": 2.35, "y": 48.85}],
                           "style": None, "prjCoordSys": {"epsgCode": 4326}},
        "analystParameter": {**_BUFFER_PARAMS, "leftDistance": {"exp": None, "value": 0.01},
                             "rightDistance": {"exp": None, "value": 0.01}}},
    ANALYST + "/geometry/overlay": {"operation": "INTERSECT", "sourceGeometry": _region(0, 0, 2),
                                    "operateGeometry": _region(1, 1, 2)},
    ANALYST + "/geometry/overlay/batch": {"operation": "CLIP", "sourceGeometries": [_region(0, 0, 2)],
                                          "operateGeometries": [_region(1, 1, 2)]},
    SM + "/rest/data/coordtransfer": {
        "sourceGeometries": [{"type": "LINE", "parts": [2], "points": [{"x": 113.98, "y": 4.39},
                                                                     {"x": 114.98, "y": 5.39}]}],
        "sourceEpsgCode": 4326, "targetEpsgCode": 3857},
    ANALYST + "/datasets/{dataset}/buffer": {"bufferAnalystParameter": _BUFFER_PARAMS},
    ANALYST + "/datasets/{dataset}/overlay": {"operation": "CLIP", "operateRegions": [_region(2, 48, 1)]},
}
ISERVER_BODIES[SM + "/restjsr/v1/geometry/coordtransfer"] = ISERVER_BODIES[SM + "/rest/data/coordtransfer"]


def anyone(ok: int) -> dict[str, int]:
    """No object of anyone's in the path: every authenticated caller gets ``ok``."""
    return {OWNER: ok, OTHER: ok, AGENT: ok, ADMIN: ok, ANON: 401}


def iserver_inline(resource: str) -> Maker:
    def make(w: World, _actor: str) -> Target:
        return Target({"service": SERVICE_NAME}, ISERVER_BODIES[resource])
    return make


def iserver_dataset(resource: str) -> Maker:
    def make(w: World, _actor: str) -> Target:
        name = w.dataset_names[w.new_dataset()]
        return Target({"service": SERVICE_NAME, "dataset": f"{name}@geoservice"}, ISERVER_BODIES[resource],
                      query={"asynchronousReturn": "true"})
    return make


def iserver_child(resource: str) -> Maker:
    """A result of the owner's: POST ``resource`` as the owner (dataset analyses: wait for the task)."""
    def make(w: World, actor: str) -> Target:
        parent = (iserver_dataset if "{dataset}" in resource else iserver_inline)(resource)(w, actor)
        r = _call(w.owner.client, "POST", resource, parent)
        assert r.status_code == 201, r.text
        result_id = r.json()["newResourceID"]
        if "{dataset}" in resource:
            assert w.wait_task(result_id) == "successful"
        return Target({**parent.params, "result_id": f"{result_id}.json"})
    return make


def iserver_cases() -> dict[tuple[str, str], Case]:
    cases: dict[tuple[str, str], Case] = {}
    for resource in ISERVER_BODIES:
        dataset_analysis = "{dataset}" in resource
        content = resource.endswith("/v1/geometry/coordtransfer")  # answers with the result itself
        if dataset_analysis:  # someone else's dataset name is iServer's "does not exist" (400); admins too
            make, expect = iserver_dataset(resource), {OWNER: 201, OTHER: 400, AGENT: 400, ADMIN: 400, ANON: 401}
        else:
            make, expect = iserver_inline(resource), anyone(200 if content else 201)
        for suffix in SUFFIXES:
            cases[("POST", resource + suffix)] = Case(make, expect, worker=dataset_analysis)
        if not content:
            cases[("GET", resource + "/{result_id}")] = Case(iserver_child(resource), mine(200),
                                                             worker=dataset_analysis)
    catch_all = Case(lambda w, a: Target({"path": "no/such/resource"}), anyone(404) | {ANON: 404})
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        cases[(method, "/iserver/{path:path}")] = catch_all
    cases[("OPTIONS", "/iserver/{path:path}")] = Case(catch_all.make, anyone(204) | {ANON: 204})  # CORS preflight
    return cases


EXPECT.update(iserver_cases())


# --- the tests ----------------------------------------------------------------------------------------

def test_every_route_with_a_path_parameter_is_in_the_table(app: Any) -> None:
    served = {r for r in app_routes(app) if has_params(r[1])}
    assert not served - EXPECT.keys(), f"routes without an authorisation expectation: {sorted(served - EXPECT.keys())}"
    assert not EXPECT.keys() - served, f"expectations for routes that no longer exist: {sorted(EXPECT.keys() - served)}"


def test_every_route_without_a_path_parameter_requires_authentication(app: Any, world: World) -> None:
    """Anything not in PUBLIC answers 401 with a Bearer challenge to a caller without credentials."""
    routes = app_routes(app)
    assert not PUBLIC - set(routes), f"stale PUBLIC entries: {sorted(PUBLIC - set(routes))}"
    checked = 0
    for method, path in routes:
        if (method, path) in PUBLIC or has_params(path):  # routes with parameters: the matrix
            continue
        r = world.anonymous.client.request(method, path)
        assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text}"
        assert r.headers.get("www-authenticate") == "Bearer"
        check_error_body(path, r)
        checked += 1
    assert checked >= 10



@pytest.mark.parametrize("route", sorted(EXPECT), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_matrix(route: tuple[str, str], world: World, request: pytest.FixtureRequest) -> None:
    method, path = route
    case = EXPECT[route]
    assert set(case.expect) == {OWNER, OTHER, AGENT, ADMIN, ANON}
    if case.worker:
        request.getfixturevalue("worker")

    target = case.make(world, OWNER)
    for actor in FOREIGN:
        r = _call(world.actors[actor].client, method, path, target)
        assert r.status_code == case.expect[actor], f"{actor}: {r.status_code} {r.text}"
        if r.status_code >= 400:
            check_error_body(path, r)
        if r.status_code == 401:
            assert r.headers.get("www-authenticate") == "Bearer"
        if actor != ANON and r.status_code in (400, 404):  # indistinguishable from an id that does not exist
            missing = Target(_nonexistent(target.params), target.json, query=target.query)
            m = _call(world.actors[actor].client, method, path, missing)
            assert (m.status_code, error_shape(path, m.json())) == (r.status_code, error_shape(path, r.json()))
    if target.intact:
        target.intact()
    r = _call(world.owner.client, method, path, target)
    assert r.status_code == case.expect[OWNER], f"owner: {r.status_code} {r.text}"
    if case.worker and path.startswith(ISERVER) and r.status_code == 201:  # leave no analysis running behind
        world.wait_task(r.json()["newResourceID"])
    admin_target = case.make(world, ADMIN)
    r = _call(world.admin.client, method, path, admin_target)
    assert r.status_code == case.expect[ADMIN], f"admin: {r.status_code} {r.text}"
