"""Passwords are argon2id with at least OWASP's parameters; no issued token or key is stored in clear text."""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from geoservice.config import Settings
from tests.auth.conftest import World
from tests.conftest import login, make_user

ARGON2 = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{16,}\$[A-Za-z0-9+/]{32,}$")
# Feature rows (``spatial_data`` and its per-dataset partitions) cannot hold credentials and may be large;
# PostGIS's ``spatial_ref_sys`` is reference data. Every other table is searched.
SKIPPED = re.compile(r"^(spatial_data(_.*)?|spatial_ref_sys)$")


def test_password_hashes_are_argon2id_with_enough_memory_and_passes(world: World, pg: Any) -> None:
    rows = pg.execute("SELECT username, hashed_password FROM users WHERE hashed_password IS NOT NULL").fetchall()
    assert len(rows) >= 5
    for username, hashed in rows:
        match = ARGON2.match(hashed)
        assert match, f"{username}: {hashed[:30]}"
        memory_kib, passes, _lanes = map(int, match.groups())
        assert memory_kib >= 19 * 1024 and passes >= 2, f"{username}: m={memory_kib} t={passes}"
    passwords = [a.password for a in world.actors.values() if a.password]
    assert passwords and not any(p in h for p in passwords for _, h in rows)


def _tables(pg: Any) -> list[str]:
    rows = pg.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                      "AND table_type = 'BASE TABLE'").fetchall()
    return [r[0] for r in rows if not SKIPPED.match(r[0])]


def _found(pg: Any, secrets_: list[str]) -> list[tuple[str, str]]:
    """(table, secret) for every secret that appears in any column of any row of any table."""
    hits = []
    for table in _tables(pg):
        query = sql.SQL("SELECT s FROM unnest(%s::text[]) s WHERE EXISTS "
                        "(SELECT 1 FROM {} t WHERE strpos(t::text, s) > 0)").format(sql.Identifier(table))
        hits += [(table, row[0][:12]) for row in pg.execute(query, (secrets_,)).fetchall()]
    return hits


def test_no_token_or_key_is_stored_in_clear_text(world: World, settings: Settings, pg: Any) -> None:
    _, name, password = make_user(settings, ["analyst"])
    c = world.anonymous.client
    first = login(c, name, password)
    second = c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    key = c.post("/api/v1/users/me/api-keys", json={"name": "agent"}, headers=bearer).json()["key"]
    assert c.get("/api/v1/users/me", headers={"X-API-Key": key}).status_code == 200  # last_used_at is written
    iserver = c.post("/iserver/services/security/tokens.json",
                     json={"userName": name, "password": password, "expiration": 5}).text
    third = login(c, name, password)
    assert c.post("/api/v1/auth/logout", json={"refresh_token": third["refresh_token"]},
                  headers={"Authorization": f"Bearer {third['access_token']}"}).status_code == 204
    issued = [first["access_token"], first["refresh_token"], second["access_token"], second["refresh_token"],
              third["access_token"], third["refresh_token"], iserver, key, password]
    # The parts that matter alone: JWT signatures, and an API key's secret without its public prefix.
    issued += [t.rsplit(".", 1)[1] for t in (first["access_token"], second["access_token"], iserver)]
    issued.append(key.split("_", 2)[2])
    assert _found(pg, issued) == []
    stored = pg.execute("SELECT provider, refresh_token, access_token FROM user_credentials c JOIN users u "
                        "ON u.id = c.user_id WHERE u.username = %s", (name,)).fetchall()
    assert {p for p, _, _ in stored} == {"refresh", "api_key"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", r or a) for _, r, a in stored)  # SHA-256 digests only


def test_the_search_finds_a_planted_secret(pg: Any) -> None:
    """The control for the test above: a value that is in the database is found."""
    username = pg.execute("SELECT username FROM users LIMIT 1").fetchone()[0]
    assert ("users", username[:12]) in _found(pg, [username])
