"""Registration: closed by default (admins create accounts, with roles); when open, anyone gets the default
role and only admins choose roles."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from geoservice.config import Settings
from tests.auth.conftest import World, open_client
from tests.conftest import login
from tests.helpers import unique

REGISTER = "/api/v1/auth/register"


def account(**extra: Any) -> dict[str, Any]:
    return {"username": unique("reg"), "password": secrets.token_urlsafe(12), **extra}


def test_closed_by_default(world: World, settings: Settings) -> None:
    assert settings.registration_open is False
    for actor in ("anonymous", "owner", "agent"):
        r = world.actors[actor].client.post(REGISTER, json=account())
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", actor
        r = world.actors[actor].client.post(REGISTER, json=account(roles=["admin"]))
        assert r.status_code == 403, actor
    for actor in ("owner", "agent"):
        assert world.actors[actor].client.post("/api/v1/users", json=account()).status_code == 403
    assert world.anonymous.client.post("/api/v1/users", json=account()).status_code == 401


@pytest.mark.parametrize("url", [REGISTER, "/api/v1/users"])
def test_admins_create_accounts_with_roles(world: World, url: str) -> None:
    body = account(roles=["viewer", "agent"], email=f"{unique('m')}@example.org")
    r = world.admin.client.post(url, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["roles"] == ["agent", "viewer"] and created["is_superuser"] is False
    assert "password" not in r.text and body["password"] not in r.text and "hashed" not in r.text
    token = login(world.anonymous.client, body["username"], body["password"])["access_token"]
    me = world.anonymous.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["id"] == created["id"] and me["roles"] == ["agent", "viewer"]
    default = world.admin.client.post(url, json=account())
    assert default.status_code == 201 and default.json()["roles"] == ["analyst"]


def test_admin_input_is_checked(world: World) -> None:
    c = world.admin.client
    assert c.post(REGISTER, json=account(is_superuser=True)).status_code == 422  # not a field
    assert c.post(REGISTER, json=account(roles=["root"])).status_code == 422
    assert c.post(REGISTER, json=account(password="short")).status_code == 422
    taken = account()
    assert c.post(REGISTER, json=taken).status_code == 201
    assert c.post(REGISTER, json={**taken, "password": secrets.token_urlsafe(12)}).status_code == 409


@pytest.fixture(scope="module")
def open_registration(app: Any, settings: Settings) -> Iterator[TestClient]:
    from geoservice.api.app import create_app

    c = open_client(create_app(settings.model_copy(update={"registration_open": True})))
    yield c
    c.__exit__(None, None, None)


def test_open_registration_gives_the_default_role(open_registration: TestClient, settings: Settings,
                                                  pg: Any) -> None:
    body = account()
    r = open_registration.post(REGISTER, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["roles"] == [settings.default_role] and r.json()["is_superuser"] is False
    token = login(open_registration, body["username"], body["password"])["access_token"]
    assert open_registration.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    logged = pg.execute("SELECT count(*) FROM user_activity_logs WHERE action = 'user_registered' "
                        "AND user_id = %s", (r.json()["id"],)).fetchone()[0]
    assert logged == 1


def test_open_registration_does_not_let_you_choose_roles(open_registration: TestClient, world: World) -> None:
    for roles in (["admin"], ["analyst"], []):
        r = open_registration.post(REGISTER, json=account(roles=roles))
        assert r.status_code == 403 and r.json()["field"] == "roles", roles
    owner_token = world.owner.client.headers["Authorization"]
    r = open_registration.post(REGISTER, json=account(roles=["admin"]), headers={"Authorization": owner_token})
    assert r.status_code == 403
    admin_token = world.admin.client.headers["Authorization"]
    r = open_registration.post(REGISTER, json=account(roles=["viewer"]), headers={"Authorization": admin_token})
    assert r.status_code == 201 and r.json()["roles"] == ["viewer"]
