"""Test fixtures: a fresh migrated PostGIS database and Redis queue per run, the app, real workers.

Tests that need the database commit (a worker process cannot see uncommitted rows), so each run
gets its own database ``geoservice_test_<random>`` and queue name, dropped/cleared at the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from geoservice.config import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
PG_ADMIN = os.environ.get("GEOSERVICE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GEOSERVICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    name = f"geoservice_test_{run_id}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"], cwd=ROOT, check=True,
                   capture_output=True)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_env(database_url: str, queue: str, **overrides: str) -> dict[str, str]:
    env = {
        "GEOSERVICE_ENV": "test",
        "GEOSERVICE_DATABASE_URL": database_url,
        "GEOSERVICE_REDIS_URL": REDIS_URL,
        "GEOSERVICE_TASK_QUEUE": queue,
        "GEOSERVICE_TASK_LEASE_S": "6",
        "GEOSERVICE_SWEEPER_INTERVAL_S": "5",
        "GEOSERVICE_SWEEPER_ACCEPTED_GRACE_S": "10",
        "GEOSERVICE_PROGRESS_INTERVAL_S": "0.2",
        "GEOSERVICE_ANALYSIS_PLUGINS": "tests.plugins.slow:OPERATION",
        # Tokens live longer than the slowest test; rate limits stay as configured.
        "GEOSERVICE_ACCESS_TOKEN_TTL_S": "3600",
    }
    env.update({f"GEOSERVICE_{k.upper()}": v for k, v in overrides.items()})
    return env


@pytest.fixture(scope="session")
def queue_name(run_id: str) -> Iterator[str]:
    name = f"geoservice-test-{run_id}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{name}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def settings(database_url: str, queue_name: str) -> Settings:
    env = settings_env(database_url, queue_name)
    return Settings(**{k.removeprefix("GEOSERVICE_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]


def make_user(settings: Settings, roles: list[str], username: str | None = None) -> tuple[str, str, str]:
    """Create a user directly through the service; return (user id, username, password)."""
    from geoservice.db.engine import make_engine, make_sessionmaker, transaction
    from geoservice.services.auth import create_user

    username = username or f"u_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    engine = make_engine(settings, "cli")
    with transaction(make_sessionmaker(engine)) as session:
        user = create_user(session, username=username, password=password, roles=roles,
                           is_superuser="admin" in roles)
        user_id = str(user.id)
    engine.dispose()
    return user_id, username, password


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def authed_client(app, settings: Settings, roles: list[str] | None = None) -> TestClient:  # type: ignore[no-untyped-def]
    """A TestClient logged in (Bearer token) as a new user with ``roles`` (default: analyst)."""
    c = TestClient(app)
    c.__enter__()
    _, name, password = make_user(settings, roles or ["analyst"])
    c.headers["Authorization"] = f"Bearer {login(c, name, password)['access_token']}"
    return c


@pytest.fixture(scope="session")
def app(settings: Settings):  # type: ignore[no-untyped-def]
    from geoservice.api.app import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def client(app, settings: Settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The API as an analyst (a fresh user of this test run)."""
    c = authed_client(app, settings)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def factory(settings: Settings) -> Iterator[Any]:
    """A session factory on the test database, for tests that call services and repositories directly."""
    from geoservice.db.engine import make_engine, make_sessionmaker

    engine = make_engine(settings, "cli")
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection to the test database, for independent checks with PostGIS SQL."""
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        yield conn


class WorkerProcess:
    """A real ``geoservice worker`` process (Celery prefork) on the test queue."""

    def __init__(self, env: dict[str, str], concurrency: int = 1) -> None:
        self.log = open(f"/tmp/geoservice-test-worker-{secrets.token_hex(3)}.log", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geoservice.cli", "worker", "-c", str(concurrency), "--loglevel", "INFO"],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, redis_client: redis.Redis, queue: str, timeout: float = 60) -> None:
        from geoservice.heartbeat import alive_workers

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.output()[-3000:]}")
            if alive_workers(redis_client, queue):
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.output()[-3000:]}")

    def _read(self) -> bytes:
        self.log.flush()
        return Path(self.log.name).read_bytes()

    def output(self) -> str:
        return self._read().decode(errors="replace")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


def stop_process_group(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM a child started with ``start_new_session=True`` and its children; SIGKILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def worker(database_url: str, queue_name: str) -> Iterator[WorkerProcess]:
    """One shared worker (2 pool processes) for the end-to-end tests."""
    w = WorkerProcess(settings_env(database_url, queue_name), concurrency=2)
    w.wait_ready(redis.Redis.from_url(REDIS_URL), queue_name)
    yield w
    w.stop()
