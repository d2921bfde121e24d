"""The activity log records logins (and failures), logout, refresh, dataset and task events and role changes,
each with the client's IP address and user agent."""

from __future__ import annotations

import ipaddress
from typing import Any

from geoservice.config import Settings
from tests.auth.conftest import open_client
from tests.conftest import make_user
from tests.helpers import fc, feature, unique

IP = "203.0.113.7"  # TEST-NET-3: TestClient's default host 'testclient' is no address for the inet column


def test_actions_are_logged_with_ip_and_user_agent(app: Any, settings: Settings, pg: Any,
                                                   login_fail_keys: set[str]) -> None:
    agent = unique("geoservice-tests/1.0")
    c = open_client(app, ip=IP, headers={"User-Agent": agent})
    admin_c = open_client(app, ip=IP, headers={"User-Agent": agent})
    try:
        user_id, name, password = make_user(settings, ["analyst"])
        admin_id, admin_name, admin_password = make_user(settings, ["admin"])
        login_fail_keys.update({name, IP})
        assert c.post("/api/v1/auth/token", data={"username": name, "password": "wrong password"}).status_code == 401
        pair = c.post("/api/v1/auth/token", data={"username": name, "password": password}).json()
        pair = c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
        c.headers["Authorization"] = f"Bearer {pair['access_token']}"
        body = fc([feature({"type": "Point", "coordinates": [1, 2]})], name=unique("logged"))
        dataset_id = c.post("/api/v1/datasets", json=body).json()["id"]
        assert c.delete(f"/api/v1/datasets/{dataset_id}").status_code == 204
        task = c.post("/api/v1/tasks", json={"name": "t", "analysis_type": "slow_reproject", "parameters": {
            "input": {"geojson": {"type": "Point", "coordinates": [1, 2]}}, "target_crs": 3857, "seconds": 20}})
        task_id = task.json()["id"]
        assert c.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200
        admin_token = admin_c.post("/api/v1/auth/token",
                                   data={"username": admin_name, "password": admin_password}).json()
        admin_c.headers["Authorization"] = f"Bearer {admin_token['access_token']}"
        assert admin_c.post(f"/api/v1/users/{user_id}/roles", json={"role": "viewer"}).status_code == 200
        assert admin_c.delete(f"/api/v1/users/{user_id}/roles/viewer").status_code == 200
        assert c.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}).status_code == 204
        mine = c.get("/api/v1/users/me/activity")  # the token is revoked now
        assert mine.status_code == 401
    finally:
        c.__exit__(None, None, None)
        admin_c.__exit__(None, None, None)

    rows = pg.execute("SELECT action, user_id::text, ip_address, user_agent, details FROM user_activity_logs "
                      "WHERE user_id IN (%s, %s) ORDER BY created_at", (user_id, admin_id)).fetchall()
    assert all(ip == ipaddress.ip_address(IP) and ua == agent for _, _, ip, ua, _ in rows), rows
    by_action: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for action, actor, _, _, details in rows:
        by_action.setdefault(action, []).append((actor, details))
    expected = {"login_failed": {user_id}, "login": {user_id, admin_id}, "token_refresh": {user_id},
                "logout": {user_id}, "dataset_created": {user_id}, "dataset_deleted": {user_id},
                "task_submitted": {user_id}, "task_cancelled": {user_id}, "role_changed": {admin_id}}
    assert expected.keys() <= by_action.keys(), sorted(by_action)
    for action, actors in expected.items():
        assert {a for a, _ in by_action[action]} == actors, action
    assert [d["dataset_id"] for _, d in by_action["dataset_deleted"]] == [dataset_id]
    assert [d["task_id"] for _, d in by_action["task_cancelled"]] == [task_id]
    changes = [d for _, d in by_action["role_changed"]]
    assert changes == [{"user_id": user_id, "added": "viewer"}, {"user_id": user_id, "removed": "viewer"}]


def test_activity_api_shows_ip_and_user_agent(app: Any, settings: Settings, login_fail_keys: set[str]) -> None:
    ip = "198.51.100.9"
    login_fail_keys.add(ip)
    c = open_client(app, ip=ip, headers={"User-Agent": "activity-api-test"})
    try:
        _, name, password = make_user(settings, ["viewer"])
        login_fail_keys.add(name)
        token = c.post("/api/v1/auth/token", data={"username": name, "password": password}).json()["access_token"]
        r = c.get("/api/v1/users/me/activity", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert [(a["action"], a["ip_address"], a["user_agent"]) for a in r.json()] == \
               [("login", ip, "activity-api-test")]
    finally:
        c.__exit__(None, None, None)


def test_failed_login_of_unknown_user_is_logged_without_user(app: Any, pg: Any, login_fail_keys: set[str]) -> None:
    name = unique("nobody")
    login_fail_keys.update({name, IP})
    c = open_client(app, ip=IP, headers={"User-Agent": "probe"})
    try:
        assert c.post("/api/v1/auth/token", data={"username": name, "password": "x" * 12}).status_code == 401
    finally:
        c.__exit__(None, None, None)
    row = pg.execute("SELECT user_id, host(ip_address), user_agent FROM user_activity_logs "
                     "WHERE action = 'login_failed' AND details->>'username' = %s", (name,)).fetchone()
    assert row == (None, IP, "probe")
