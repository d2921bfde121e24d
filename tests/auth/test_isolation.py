"""Lists hold only the caller's rows; administrators' lists are theirs alone; viewers read what is shared or
public and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.conftest import World
from tests.helpers import fc, feature, unique

ADMIN_LISTS = ["/api/v1/tasks?scope=all", "/api/v1/users", "/api/v1/roles", "/api/v1/activity"]


@pytest.fixture(scope="module")
def owned(world: World, worker: Any) -> dict[str, str]:
    """One of each of the owner's objects (a finished task too)."""
    agent_session = world.owner.client.post("/api/v1/agent/sessions", json={"title": unique("owned")})
    assert agent_session.status_code == 201, agent_session.text
    return {"dataset": world.new_dataset(), "task": world.new_task(), "preference": world.new_preference(),
            "api_key": world.new_api_key(), "agent_session": agent_session.json()["id"]}


def _rows(client: Any, url: str) -> Any:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("actor", ["other", "agent", "sharee"])
def test_lists_hold_no_foreign_rows(world: World, owned: dict[str, str], actor: str) -> None:
    caller = world.actors[actor]
    c, me = caller.client, caller.user_id
    datasets = _rows(c, "/api/v1/datasets?limit=10000")
    assert datasets["count"] == len(datasets["data"])
    assert owned["dataset"] not in {d["id"] for d in datasets["data"]}
    if actor != "sharee":  # nothing is shared with them
        assert all(d["owner_id"] == me or d["is_public"] for d in datasets["data"])
    for url in ("/api/v1/tasks?limit=10000", "/api/v1/tasks?scope=own&status=successful&analysis_type=reproject"):
        tasks = _rows(c, url)
        assert owned["task"] not in {t["id"] for t in tasks["data"]}
        assert all(t["created_by"] == me for t in tasks["data"]) and tasks["count"] == len(tasks["data"])
    keys = _rows(c, "/api/v1/users/me/api-keys")
    assert owned["api_key"] not in {k["id"] for k in keys}
    assert len(keys) == (1 if actor == "agent" else 0)  # the agent's own key only
    assert owned["preference"] not in {p["key"] for p in _rows(c, "/api/v1/users/me/preferences")}
    activity = _rows(c, "/api/v1/users/me/activity?limit=1000")
    assert activity and {a["user_id"] for a in activity} == {me}
    sessions = _rows(c, "/api/v1/agent/sessions?limit=10000")
    assert owned["agent_session"] not in {s["id"] for s in sessions["data"]}
    assert all(s["user_id"] == me for s in sessions["data"]) and sessions["count"] == len(sessions["data"])


def test_owner_lists_show_the_owners_rows(world: World, owned: dict[str, str]) -> None:
    c = world.owner.client
    assert owned["dataset"] in {d["id"] for d in _rows(c, "/api/v1/datasets?limit=10000")["data"]}
    assert owned["task"] in {t["id"] for t in _rows(c, "/api/v1/tasks?limit=10000")["data"]}
    assert owned["api_key"] in {k["id"] for k in _rows(c, "/api/v1/users/me/api-keys")}
    assert owned["preference"] in {p["key"] for p in _rows(c, "/api/v1/users/me/preferences")}
    assert owned["agent_session"] in {s["id"] for s in _rows(c, "/api/v1/agent/sessions?limit=10000")["data"]}


@pytest.mark.parametrize("url", ADMIN_LISTS)
def test_admin_lists_are_for_admins(world: World, owned: dict[str, str], url: str) -> None:
    for actor in ("owner", "other", "agent", "sharee"):
        r = world.actors[actor].client.get(url)
        assert r.status_code == 403, f"{actor}: {r.status_code} {r.text}"
        assert r.json()["error"] == "Forbidden"
    r = world.anonymous.client.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    body = _rows(world.admin.client, url)
    if url.startswith("/api/v1/tasks"):
        assert owned["task"] in {t["id"] for t in _rows(world.admin.client, url + "&limit=10000")["data"]}
    elif url == "/api/v1/users":
        assert body["count"] >= 5
    elif url == "/api/v1/roles":
        assert {r["name"] for r in body} == {"admin", "analyst", "viewer", "agent"}
    else:
        assert all("action" in a for a in body) and body


def test_admin_sees_every_users_login(world: World) -> None:
    logins = _rows(world.admin.client, "/api/v1/activity?action=login&limit=1000")
    assert {world.owner.user_id, world.other.user_id} <= {a["user_id"] for a in logins}
    assert {a["action"] for a in logins} == {"login"}


# --- viewers, shares and public datasets -----------------------------------------------------------------

POINT_FC = fc([feature({"type": "Point", "coordinates": [1.0, 2.0]}, name="x")])


def test_viewer_cannot_create_datasets_or_submit_tasks(world: World) -> None:
    c = world.sharee.client
    r = c.post("/api/v1/datasets", json={**POINT_FC, "name": unique("viewer")})
    assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
    task = {"name": "t", "analysis_type": "reproject",
            "parameters": {"input": {"geojson": POINT_FC}, "target_crs": 3857}}
    r = c.post("/api/v1/tasks", json=task)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
    assert _rows(c, "/api/v1/tasks")["count"] == 0


def _reads(c: Any, dataset_id: str) -> list[int]:
    return [c.get(f"/api/v1/datasets/{dataset_id}{tail}").status_code for tail in ("", "/features", "/export")]


def test_viewer_reads_a_shared_dataset_read_only(world: World) -> None:
    c, d = world.sharee.client, world.new_dataset()
    assert _reads(c, d) == [404, 404, 404]
    r = world.owner.client.post(f"/api/v1/datasets/{d}/shares", json={"username": world.sharee.username})
    assert r.status_code == 201 and r.json()["user_id"] == world.sharee.user_id
    assert _reads(c, d) == [200, 200, 200]
    assert d in {x["id"] for x in _rows(c, "/api/v1/datasets?limit=10000")["data"]}
    assert _reads(world.other.client, d) == [404, 404, 404]  # shared with the viewer only
    writes = [c.patch(f"/api/v1/datasets/{d}", json={"name": "mine now"}), c.delete(f"/api/v1/datasets/{d}"),
              c.get(f"/api/v1/datasets/{d}/shares"),
              c.post(f"/api/v1/datasets/{d}/shares", json={"username": world.other.username}),
              c.delete(f"/api/v1/datasets/{d}/shares/{world.sharee.user_id}")]
    assert [r.status_code for r in writes] == [403] * 5, [r.text for r in writes]
    assert _rows(world.owner.client, f"/api/v1/datasets/{d}")["name"] != "mine now"
    r = world.owner.client.delete(f"/api/v1/datasets/{d}/shares/{world.sharee.user_id}")
    assert r.status_code == 204
    assert _reads(c, d) == [404, 404, 404]


def test_public_dataset_is_readable_by_everyone_and_writable_by_its_owner_only(world: World) -> None:
    d = world.new_dataset()
    assert _reads(world.other.client, d) == [404, 404, 404]
    r = world.owner.client.patch(f"/api/v1/datasets/{d}", json={"is_public": True})
    assert r.status_code == 200 and r.json()["is_public"] is True
    for actor in ("sharee", "other", "agent"):
        c = world.actors[actor].client
        assert _reads(c, d) == [200, 200, 200], actor
        statuses = [c.patch(f"/api/v1/datasets/{d}", json={"is_public": False}).status_code,
                    c.delete(f"/api/v1/datasets/{d}").status_code]
        assert statuses == [403, 403], actor
    assert world.anonymous.client.get(f"/api/v1/datasets/{d}").status_code == 401
    assert _rows(world.owner.client, f"/api/v1/datasets/{d}")["is_public"] is True
    world.owner.client.patch(f"/api/v1/datasets/{d}", json={"is_public": False})
    assert _reads(world.sharee.client, d) == [404, 404, 404]


def test_tasks_take_inputs_only_from_readable_datasets(world: World) -> None:
    """Someone else's private dataset is an unknown input, exactly like one that does not exist."""
    private, public = world.new_dataset(), world.new_dataset(public=True)

    def submit(dataset_id: str) -> Any:
        return world.other.client.post("/api/v1/tasks", json={
            "name": "t", "analysis_type": "reproject",
            "parameters": {"input": {"dataset_id": dataset_id}, "target_crs": 3857}})

    refused, missing = submit(private), submit("00000000-0000-0000-0000-000000000000")
    assert refused.status_code == missing.status_code == 422
    assert refused.json()["field"] == missing.json()["field"] == "parameters.input.dataset_id"
    accepted = submit(public)
    assert accepted.status_code == 202, accepted.text
