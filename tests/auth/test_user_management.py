"""User management edge cases: admin updates, preferences, API key listing."""

from __future__ import annotations

from typing import Any

from geoservice.config import Settings
from tests.auth.conftest import World
from tests.conftest import make_user
from tests.helpers import unique


def test_admin_update_refuses_null_activity_and_taken_email(world: World, settings: Settings) -> None:
    user_id = make_user(settings, ["analyst"])[0]
    c = world.admin.client
    r = c.patch(f"/api/v1/users/{user_id}", json={"is_active": None})
    assert r.status_code == 422, r.text
    email = f"{unique('taken')}@example.org"
    assert c.patch(f"/api/v1/users/{world.sharee.user_id}", json={"email": email}).status_code == 200
    r = c.patch(f"/api/v1/users/{user_id}", json={"email": email})
    assert r.status_code == 409, r.text
    r = c.patch(f"/api/v1/users/{user_id}", json={"email": None, "phone": "+1 555 0101"})
    assert r.status_code == 200 and r.json()["phone"] == "+1 555 0101"
    assert c.get(f"/api/v1/users/{user_id}").json()["is_active"] is True


def test_preference_keys_are_bounded(world: World) -> None:
    c = world.owner.client
    long_key = "k" * 150
    first = c.put(f"/api/v1/users/me/preferences/{long_key}", json={"value": "a"})
    assert first.status_code == 422, first.text
    key = "k" * 100
    assert c.put(f"/api/v1/users/me/preferences/{key}", json={"value": "a"}).status_code == 200
    r = c.put(f"/api/v1/users/me/preferences/{key}", json={"value": "b"})
    assert r.status_code == 200 and r.json() == {**r.json(), "key": key, "value": "b"}
    assert c.get(f"/api/v1/users/me/preferences/{key}").json()["value"] == "b"
    assert c.delete(f"/api/v1/users/me/preferences/{key}").status_code == 204


def test_api_key_list_never_shows_the_key(world: World, pg: Any) -> None:
    created = world.owner.client.post("/api/v1/users/me/api-keys", json={"name": unique("k")}).json()
    listed = world.owner.client.get("/api/v1/users/me/api-keys")
    assert created["key"] not in listed.text and "access_token" not in listed.text
    assert {"id", "name", "prefix", "roles", "created_at"} <= set(listed.json()[0])
