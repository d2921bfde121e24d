"""Actors for the authentication and authorisation tests, and the objects an owner makes.

The users, made once: ``owner`` and ``other`` (analysts), ``agent`` (a third user with only the
agent role, calling with an API key), ``admin``, ``sharee`` (a viewer datasets get shared with) and
``anonymous`` (no credentials). Objects are always made through the API, as the owner.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from geoservice.config import Settings
from tests.conftest import REDIS_URL, login, make_user
from tests.helpers import fc, feature, unique

FINAL = {"successful", "failed", "dismissed"}


def open_client(app: Any, *, ip: str | None = None, headers: dict[str, str] | None = None) -> TestClient:
    """A started TestClient; ``ip`` sets the client address the app sees (default 'testclient': not an IP)."""
    c = TestClient(app, client=(ip, 50000)) if ip else TestClient(app)
    c.__enter__()
    c.headers.update(headers or {})
    return c


def random_ip() -> str:
    """An address from the IPv6 documentation prefix, unique per call (rate-limit keys never collide)."""
    return f"2001:db8:{secrets.token_hex(2)}::{secrets.token_hex(2)}"


@dataclass
class Actor:
    name: str
    client: TestClient
    user_id: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class World:
    """The actors of one module, and helpers that make objects owned by ``owner``."""

    app: Any
    settings: Settings
    actors: dict[str, Actor] = field(default_factory=dict)
    clients: list[TestClient] = field(default_factory=list)
    dataset_names: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Actor:
        try:
            return self.__dict__["actors"][name]
        except KeyError:
            raise AttributeError(name) from None

    def add_user(self, name: str, roles: list[str]) -> Actor:
        """A new user logged in with a Bearer token."""
        user_id, username, password = make_user(self.settings, roles)
        c = open_client(self.app)
        c.headers["Authorization"] = f"Bearer {login(c, username, password)['access_token']}"
        self.clients.append(c)
        self.actors[name] = Actor(name, c, user_id, username, password)
        return self.actors[name]

    def add_key_user(self, name: str, roles: list[str]) -> Actor:
        """A new user calling with an API key (``X-API-Key``) only."""
        bearer = self.add_user(f"{name}_bearer", roles)
        r = bearer.client.post("/api/v1/users/me/api-keys", json={"name": f"{name} key"})
        assert r.status_code == 201, r.text
        c = open_client(self.app, headers={"X-API-Key": r.json()["key"]})
        self.clients.append(c)
        self.actors[name] = Actor(name, c, bearer.user_id, bearer.username, bearer.password)
        return self.actors[name]

    def add_anonymous(self) -> Actor:
        c = open_client(self.app)
        self.clients.append(c)
        self.actors["anonymous"] = Actor("anonymous", c)
        return self.actors["anonymous"]

    # --- the owner's objects ------------------------------------------------------------------------

    def new_dataset(self, shared_with: str | None = None, public: bool = False) -> str:
        body = fc([feature({"type": "Point", "coordinates": [2.35, 48.85]}, name="Paris")], name=unique("authz"))
        r = self.owner.client.post("/api/v1/datasets", json=body)
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
        self.dataset_names[dataset_id] = r.json()["name"]
        if shared_with:
            r = self.owner.client.post(f"/api/v1/datasets/{dataset_id}/shares", json={"username": shared_with})
            assert r.status_code == 201, r.text
        if public:
            r = self.owner.client.patch(f"/api/v1/datasets/{dataset_id}", json={"is_public": True})
            assert r.status_code == 200, r.text
        return dataset_id

    def new_task(self, *, slow: bool = False) -> str:
        """A reprojection of an inline point; waits for its end unless ``slow`` (then it runs for 20 s)."""
        params: dict[str, Any] = {"input": {"geojson": {"type": "Point", "coordinates": [2.35, 48.85]}},
                                  "target_crs": 3857}
        if slow:
            params["seconds"] = 20
        body = {"name": unique("authz"), "analysis_type": "slow_reproject" if slow else "reproject",
                "parameters": params}
        r = self.owner.client.post("/api/v1/tasks", json=body)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        if not slow:
            assert self.wait_task(task_id) == "successful"
        return task_id

    def wait_task(self, task_id: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.owner.client.get(f"/api/v1/tasks/{task_id}").json()["status"]
            if status in FINAL:
                return status
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish")

    def new_preference(self, value: str = "EPSG:2263") -> str:
        key = unique("pref")
        r = self.owner.client.put(f"/api/v1/users/me/preferences/{key}", json={"value": value})
        assert r.status_code == 200, r.text
        return key

    def new_api_key(self) -> str:
        r = self.owner.client.post("/api/v1/users/me/api-keys", json={"name": unique("key")})
        assert r.status_code == 201, r.text
        return r.json()["id"]


@pytest.fixture(scope="session")
def world(app: Any, settings: Settings) -> Iterator[World]:
    """Shared by the auth modules (users cost an argon2 hash each); tests make their own objects."""
    w = World(app, settings)
    w.add_user("owner", ["analyst"])
    w.add_user("other", ["analyst"])
    w.add_key_user("agent", ["agent"])
    w.add_user("admin", ["admin"])
    w.add_user("sharee", ["viewer"])
    w.add_anonymous()
    yield w
    for c in w.clients:
        c.__exit__(None, None, None)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def login_fail_keys(redis_client: redis.Redis) -> Iterator[set[str]]:
    """Add user names and IPs used in failed logins; their ``geoservice:login-fail:*`` keys go at the end."""
    used: set[str] = set()
    yield used
    for item in used:
        redis_client.delete(f"geoservice:login-fail:user:{item.lower()}", f"geoservice:login-fail:ip:{item}")
