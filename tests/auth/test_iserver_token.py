"""SuperMap iServer's token service: ``{userName, password, expiration}`` -> one of our access tokens, as text,
usable as ``?token=`` or as a ``token`` header (iClient and iserver-cli send it those ways)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from geoservice.config import Settings
from tests.auth.conftest import World

TOKENS = "/iserver/services/security/tokens"


@pytest.mark.parametrize("path", [TOKENS + ".json", TOKENS])
def test_token_as_text_works_as_header_and_in_iserver_urls_only(world: World, settings: Settings, path: str) -> None:
    c, owner = world.anonymous.client, world.owner
    r = c.post(path, json={"userName": owner.username, "password": owner.password, "expiration": 30})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    token = r.text
    claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"], audience=settings.jwt_audience)
    assert claims["sub"] == owner.user_id
    assert abs(claims["exp"] - (time.time() + 30 * 60)) < 60
    # in a URL only on the SuperMap surface, where iServer clients put it (URLs end up in logs)
    assert c.get("/api/v1/users/me", params={"token": token}).status_code == 401
    assert c.get("/iserver/services.json", params={"token": token}).status_code == 200
    assert c.get("/iserver/services.json").status_code == 401
    assert c.get("/api/v1/users/me", headers={"token": token}).json()["username"] == owner.username
    assert c.get("/iserver/services.json", params={"token": token + "x"}).status_code == 401
    assert c.get("/api/v1/users/me", headers={"token": token[:-3]}).status_code == 401


def test_token_opens_the_iserver_surface(world: World) -> None:
    owner = world.owner
    token = world.anonymous.client.post(TOKENS + ".json", json={"userName": owner.username,
                                                                "password": owner.password}).text
    body = {"sourceGeometries": [{"type": "POINT", "parts": [1], "points": [{"x": 2.35, "y": 48.85}]}],
            "sourceEpsgCode": 4326, "targetEpsgCode": 3857}
    url = "/iserver/services/geometry/restjsr/v1/geometry/coordtransfer.json"
    assert world.anonymous.client.post(url, json=body, params={"token": token}).status_code == 200
    assert world.anonymous.client.post(url, json=body, headers={"token": token}).status_code == 200
    r = world.anonymous.client.post(url, json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == 401


@pytest.mark.parametrize(("body", "code"), [
    ({"userName": "__owner__", "password": "wrong password!"}, 401),
    ({"userName": "__owner__"}, 400),
    ({"password": "x"}, 400),
    ({"userName": "__owner__", "password": "__password__", "expiration": 0}, 400),
    ({"userName": "__owner__", "password": "__password__", "expiration": 12 * 60 + 1}, 400),  # capped: 12 h
    ({"userName": "__owner__", "password": "__password__", "expiration": "forever"}, 400),
    ({"userName": "__owner__", "password": "__password__", "expiration": True}, 400),
    ([], 400),
])
def test_bad_requests(world: World, body: Any, code: int, login_fail_keys: set[str]) -> None:
    if isinstance(body, dict):
        body = {k: {"__owner__": world.owner.username, "__password__": world.owner.password}.get(v, v)
                for k, v in body.items()}
    login_fail_keys.add(world.owner.username or "")
    r = world.anonymous.client.post(TOKENS + ".json", json=body)
    assert r.status_code == code, r.text
    assert r.json() == {"succeed": False, "error": {"code": code, "errorMsg": r.json()["error"]["errorMsg"]}}
    if code == 401:
        assert r.headers["www-authenticate"] == "Bearer"


def test_not_json_is_a_bad_request(world: World) -> None:
    r = world.anonymous.client.post(TOKENS + ".json", content=b"userName=x&password=y",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 400


def test_other_methods_are_iservers_405(world: World) -> None:
    r = world.anonymous.client.get(TOKENS + ".json")
    assert r.status_code == 405 and r.json()["error"]["code"] == 405 and "POST" in r.headers["allow"]


def test_expiration_defaults_to_an_hour(world: World, settings: Settings) -> None:
    for body in ({}, {"expiration": None}):
        r = world.anonymous.client.post(TOKENS + ".json", json={"userName": world.owner.username,
                                                                "password": world.owner.password, **body})
        assert r.status_code == 200, r.text
        exp = jwt.decode(r.text, settings.secret_key, algorithms=["HS256"], audience=settings.jwt_audience)["exp"]
        assert abs(exp - (time.time() + 3600)) < 60
