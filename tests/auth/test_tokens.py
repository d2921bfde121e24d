"""Access tokens, refresh rotation, logout and API keys: every forged, stale or revoked credential is a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from geoservice.config import Settings
from tests.auth.conftest import World
from tests.conftest import login, make_user
from tests.helpers import fc, feature, unique

ME = "/api/v1/users/me"


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(settings: Settings, user_id: str, **changes: Any) -> dict[str, Any]:
    """Valid access-token claims; ``changes`` replace claims (None removes one)."""
    now = datetime.now(UTC)
    out = {"sub": user_id, "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "iat": now, "nbf": now,
           "exp": now + timedelta(minutes=5), "jti": secrets.token_hex(16), "typ": "access"}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def forge(settings: Settings, user_id: str, key: str | None = None, **changes: Any) -> str:
    return jwt.encode(claims(settings, user_id, **changes), key or settings.secret_key, algorithm="HS256")


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWS assembled by hand (any ``alg`` in the header), HMAC-SHA256 signed with ``key`` or unsigned."""
    body = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in payload.items()}
    signing_input = f"{b64(header)}.{b64(body)}"
    signature = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signing_input}.{signature}"


def status(world: World, token: str, url: str = ME) -> tuple[int, str]:
    r = world.anonymous.client.get(url, headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    return r.status_code, r.json().get("detail", "")


def test_a_token_forged_with_our_secret_is_accepted(world: World, settings: Settings) -> None:
    """The control for the tests below: the forging itself is right."""
    assert status(world, forge(settings, world.owner.user_id or ""))[0] == 200


@pytest.mark.parametrize(("case", "changes"), [
    ("expired", {"exp": datetime.now(UTC) - timedelta(seconds=30)}),
    ("not yet valid", {"nbf": datetime.now(UTC) + timedelta(minutes=5)}),
    ("wrong audience", {"aud": "someone-else"}),
    ("wrong issuer", {"iss": "evil"}),
    ("missing exp", {"exp": None}),
    ("missing sub", {"sub": None}),
    ("missing jti", {"jti": None}),
    ("missing aud", {"aud": None}),
    ("not an access token", {"typ": "refresh"}),
    ("unknown user", {"sub": str(uuid.uuid4())}),
    ("sub not a uuid", {"sub": "admin"}),
])
def test_bad_claims_are_refused(world: World, settings: Settings, case: str, changes: dict[str, Any]) -> None:
    code, detail = status(world, forge(settings, world.owner.user_id or "", **changes))
    assert code == 401, case
    if case == "expired":
        assert detail == "token expired"


def test_token_signed_with_another_secret_is_refused(world: World, settings: Settings) -> None:
    assert status(world, forge(settings, world.owner.user_id or "", key=secrets.token_hex(32)))[0] == 401


def test_tampered_token_is_refused(world: World, settings: Settings) -> None:
    token = world.owner.client.headers["Authorization"].split()[1]
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = world.admin.user_id  # become the admin, keeping the owner's signature
    assert status(world, f"{header}.{b64(body)}.{signature}")[0] == 401
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert status(world, f"{header}.{payload}.{flipped}")[0] == 401
    assert status(world, f"{header}.{payload}.")[0] == 401
    assert status(world, f"{header}.{payload}")[0] == 401
    assert status(world, token)[0] == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(world: World, settings: Settings, alg: str) -> None:
    payload = claims(settings, world.admin.user_id or "")
    assert status(world, raw_token({"alg": alg, "typ": "JWT"}, payload, None))[0] == 401
    assert status(world, raw_token({"alg": alg, "typ": "JWT"}, payload, settings.secret_key.encode()))[0] == 401


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "HS512", "HS384"])
def test_other_algorithms_are_refused_even_with_a_valid_hmac(world: World, settings: Settings, alg: str) -> None:
    """Key confusion: a header naming another algorithm never selects another verification path.

    The service has no public key to confuse with; the attack left is a header claiming RS256 (or another
    algorithm) over an HMAC signature made with the shared secret, which must not verify either.
    """
    payload = claims(settings, world.owner.user_id or "")
    assert status(world, raw_token({"alg": alg, "typ": "JWT"}, payload, settings.secret_key.encode()))[0] == 401
    assert status(world, raw_token({"alg": "HS256", "typ": "JWT"}, payload, settings.secret_key.encode()))[0] == 200
    if alg.startswith("HS"):
        assert status(world, jwt.encode(payload, settings.secret_key, algorithm=alg))[0] == 401


def test_garbage_credentials_are_refused(world: World) -> None:
    for token in ("x", "a.b.c", "gs_", "gs_12345678_", "gs_12345678_" + secrets.token_urlsafe(32), "Bearer"):
        assert status(world, token)[0] == 401, token
    r = world.anonymous.client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401


def test_token_scopes_narrow_the_roles(world: World, settings: Settings) -> None:
    token = forge(settings, world.owner.user_id or "", scopes=["viewer"])
    r = world.anonymous.client.post("/api/v1/datasets", headers={"Authorization": f"Bearer {token}"},
                                    json=fc([feature({"type": "Point", "coordinates": [0, 0]})], name=unique("s")))
    assert r.status_code == 403, r.text
    # A superuser's token scoped below admin is no admin (as with API keys).
    assert status(world, forge(settings, world.admin.user_id or "", scopes=["analyst"]), "/api/v1/users")[0] == 403
    assert status(world, forge(settings, world.admin.user_id or ""), "/api/v1/users")[0] == 200


# --- refresh tokens, logout ------------------------------------------------------------------------------

@pytest.fixture
def fresh(world: World, settings: Settings) -> tuple[str, str, str]:
    return make_user(settings, ["analyst"])


def refresh(world: World, token: str) -> Any:
    return world.anonymous.client.post("/api/v1/auth/refresh", json={"refresh_token": token})


def test_refresh_rotates_and_reuse_revokes_the_family(world: World, fresh: tuple[str, str, str]) -> None:
    user_id, name, password = fresh
    first = login(world.anonymous.client, name, password)
    other_login = login(world.anonymous.client, name, password)
    r = refresh(world, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert status(world, second["access_token"])[0] == 200
    reuse = refresh(world, first["refresh_token"])
    assert reuse.status_code == 401 and reuse.headers["www-authenticate"] == "Bearer"
    assert refresh(world, second["refresh_token"]).status_code == 401  # the whole family is revoked
    assert refresh(world, other_login["refresh_token"]).status_code == 200  # another login is untouched
    reuses = [a for a in world.admin.client.get("/api/v1/activity?action=refresh_reuse&limit=1000").json()
              if a["user_id"] == user_id]
    assert reuses  # logged (once per attempt: the first reuse, then the revoked second token)


def test_refresh_refuses_unknown_access_and_expired_tokens(world: World, fresh: tuple[str, str, str], pg: Any
                                                           ) -> None:
    _, name, password = fresh
    pair = login(world.anonymous.client, name, password)
    assert refresh(world, secrets.token_urlsafe(32)).status_code == 401
    assert refresh(world, pair["access_token"]).status_code == 401
    pg.execute("UPDATE user_credentials SET expires_at = now() - interval '1 second' WHERE refresh_token = %s",
               (hashlib.sha256(pair["refresh_token"].encode()).hexdigest(),))
    r = refresh(world, pair["refresh_token"])
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_logout_revokes_the_refresh_family_and_the_access_token(world: World, fresh: tuple[str, str, str],
                                                               redis_client: Any) -> None:
    _, name, password = fresh
    pair = login(world.anonymous.client, name, password)
    rotated = refresh(world, pair["refresh_token"]).json()
    elsewhere = login(world.anonymous.client, name, password)
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    r = world.anonymous.client.post("/api/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]},
                                    headers=bearer)
    assert r.status_code == 204, r.text
    assert status(world, rotated["access_token"]) == (401, "token revoked (logged out)")
    assert refresh(world, rotated["refresh_token"]).status_code == 401
    assert refresh(world, pair["refresh_token"]).status_code == 401
    assert status(world, elsewhere["access_token"])[0] == 200  # another login goes on
    assert refresh(world, elsewhere["refresh_token"]).status_code == 200
    jti = jwt.decode(rotated["access_token"], options={"verify_signature": False})["jti"]
    redis_client.delete(f"geoservice:denied-jti:{jti}")


def test_logout_needs_your_own_refresh_token(world: World, fresh: tuple[str, str, str]) -> None:
    _, name, password = fresh
    victim = login(world.anonymous.client, name, password)
    r = world.other.client.post("/api/v1/auth/logout", json={"refresh_token": victim["refresh_token"]})
    assert r.status_code == 401
    assert refresh(world, victim["refresh_token"]).status_code == 200
    r = world.anonymous.client.post("/api/v1/auth/logout", json={"refresh_token": victim["refresh_token"]})
    assert r.status_code == 401


def test_deactivated_user_loses_every_credential(world: World, settings: Settings,
                                                login_fail_keys: set[str]) -> None:
    user_id, name, password = make_user(settings, ["analyst"])
    login_fail_keys.add(name)
    pair = login(world.anonymous.client, name, password)
    key = world.anonymous.client.post("/api/v1/users/me/api-keys", json={"name": "k"},
                                      headers={"Authorization": f"Bearer {pair['access_token']}"}).json()["key"]
    r = world.admin.client.patch(f"/api/v1/users/{user_id}", json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert status(world, pair["access_token"])[0] == 401
    assert world.anonymous.client.get(ME, headers={"X-API-Key": key}).status_code == 401
    assert refresh(world, pair["refresh_token"]).status_code == 401
    r = world.anonymous.client.post("/api/v1/auth/token", data={"username": name, "password": password})
    assert r.status_code == 401


# --- API keys --------------------------------------------------------------------------------------------

def test_api_key_revoked_or_expired_is_refused(world: World, pg: Any) -> None:
    created = world.owner.client.post("/api/v1/users/me/api-keys", json={"name": unique("k")}).json()
    assert created["key"].startswith(f"gs_{created['prefix']}_")
    c, headers = world.anonymous.client, {"X-API-Key": created["key"]}
    assert c.get(ME, headers=headers).json()["id"] == world.owner.user_id
    assert status(world, created["key"])[0] == 200  # as a Bearer credential too
    assert world.owner.client.delete(f"/api/v1/users/me/api-keys/{created['id']}").status_code == 204
    r = c.get(ME, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert status(world, created["key"])[0] == 401
    listed = {k["id"]: k for k in world.owner.client.get("/api/v1/users/me/api-keys").json()}
    assert listed[created["id"]]["revoked_at"] is not None and "key" not in listed[created["id"]]
    expiring = world.owner.client.post("/api/v1/users/me/api-keys",
                                       json={"name": unique("k"), "expires_in_days": 1}).json()
    assert world.anonymous.client.get(ME, headers={"X-API-Key": expiring["key"]}).status_code == 200
    pg.execute("UPDATE user_credentials SET expires_at = now() - interval '1 second' WHERE id = %s",
               (expiring["id"],))
    r = world.anonymous.client.get(ME, headers={"X-API-Key": expiring["key"]})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    tampered = expiring["key"][:-1] + ("a" if expiring["key"][-1] != "a" else "b")
    assert world.anonymous.client.get(ME, headers={"X-API-Key": tampered}).status_code == 401


def test_api_key_roles_are_a_subset_of_the_users(world: World) -> None:
    c = world.owner.client
    r = c.post("/api/v1/users/me/api-keys", json={"name": unique("k"), "roles": ["admin"]})
    assert r.status_code == 422 and r.json()["field"] == "roles"
    viewer_key = c.post("/api/v1/users/me/api-keys", json={"name": unique("k"), "roles": ["viewer"]})
    assert viewer_key.status_code == 422  # the owner is an analyst only
    analyst_key = c.post("/api/v1/users/me/api-keys", json={"name": unique("k"), "roles": []}).json()
    assert analyst_key["roles"] == []
    headers = {"X-API-Key": analyst_key["key"]}
    body = fc([feature({"type": "Point", "coordinates": [0, 0]})], name=unique("k"))
    assert world.anonymous.client.post("/api/v1/datasets", json=body, headers=headers).status_code == 403
    assert world.anonymous.client.get(ME, headers=headers).status_code == 200


def test_admin_key_without_the_admin_role_is_no_admin(world: World) -> None:
    key = world.admin.client.post("/api/v1/users/me/api-keys", json={"name": "k", "roles": []})
    assert key.status_code == 201, key.text
    r = world.anonymous.client.get("/api/v1/users", headers={"X-API-Key": key.json()["key"]})
    assert r.status_code == 403
