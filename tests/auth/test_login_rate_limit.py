"""Failed logins are limited per account (5) and per client IP (20) in a window; then 429 with Retry-After.

Every test uses its own user names and a random client address (so parallel runs never share a counter),
and deletes the ``geoservice:login-fail:*`` keys it made.
"""

from __future__ import annotations

from typing import Any

from geoservice.config import Settings
from tests.auth.conftest import open_client, random_ip
from tests.conftest import make_user
from tests.helpers import unique


def _login(c: Any, username: str, password: str) -> Any:
    return c.post("/api/v1/auth/token", data={"username": username, "password": password})


def _assert_limited(r: Any, settings: Settings) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "TooManyAttempts"
    assert 1 <= int(r.headers["retry-after"]) <= settings.login_window_s
    assert r.json()["retry_after"] == int(r.headers["retry-after"])


def test_five_failures_lock_the_account(app: Any, settings: Settings, login_fail_keys: set[str]) -> None:
    _, name, password = make_user(settings, ["analyst"])
    ip, elsewhere = random_ip(), random_ip()
    login_fail_keys.update({name, ip, elsewhere})
    c, d = open_client(app, ip=ip), open_client(app, ip=elsewhere)
    try:
        assert settings.login_max_failures_per_account == 5
        for _ in range(5):
            assert _login(c, name, "wrong password").status_code == 401
        _assert_limited(_login(c, name, password), settings)  # even the right password
        _assert_limited(_login(d, name, password), settings)  # from any address
        r = d.post("/iserver/services/security/tokens.json", json={"userName": name, "password": password})
        assert r.status_code == 429 and "retry-after" in r.headers and r.json()["error"]["code"] == 429
        _, someone, their_password = make_user(settings, ["analyst"])
        login_fail_keys.add(someone)
        assert _login(c, someone, their_password).status_code == 200  # the address itself is not locked
    finally:
        c.__exit__(None, None, None)
        d.__exit__(None, None, None)


def test_a_successful_login_resets_the_account_count(app: Any, settings: Settings,
                                                     login_fail_keys: set[str]) -> None:
    _, name, password = make_user(settings, ["analyst"])
    ip = random_ip()
    login_fail_keys.update({name, ip})
    c = open_client(app, ip=ip)
    try:
        for _ in range(4):
            assert _login(c, name, "wrong password").status_code == 401
        assert _login(c, name, password).status_code == 200
        for _ in range(4):
            assert _login(c, name, "wrong password").status_code == 401
        assert _login(c, name, password).status_code == 200
    finally:
        c.__exit__(None, None, None)


def test_twenty_failures_lock_the_address(app: Any, settings: Settings, login_fail_keys: set[str]) -> None:
    _, name, password = make_user(settings, ["analyst"])
    ip, elsewhere = random_ip(), random_ip()
    login_fail_keys.update({name, ip, elsewhere})
    c, d = open_client(app, ip=ip), open_client(app, ip=elsewhere)
    try:
        assert settings.login_max_failures_per_ip == 20
        for i in range(20):  # 20 different (unknown) accounts: only the address counter reaches the limit
            probe = unique(f"probe{i}")
            login_fail_keys.add(probe)
            assert _login(c, probe, "wrong password").status_code == 401
        _assert_limited(_login(c, name, password), settings)
        assert _login(d, name, password).status_code == 200  # another address is not affected
    finally:
        c.__exit__(None, None, None)
        d.__exit__(None, None, None)

