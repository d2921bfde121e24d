"""The service under test: a throwaway database and queue, the API and one worker as child processes.

``Stack`` creates ``geoservice_bench_<random>`` (migrated with ``alembic -x url=... upgrade head``),
starts ``geoservice api`` and ``geoservice worker -c 2`` with that database and a queue of its own,
and on ``close()`` stops both process groups, drops the database and deletes the queue's Redis keys.
``Stack.run_task`` is one end-to-end run: POST a task, poll it every 50 ms until it is final.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("GEOSERVICE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GEOSERVICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FINAL = {"successful", "failed", "dismissed"}
PHASE_ORDER = ("accepted", "starting", "loading", "computing", "storing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, no psutil)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


@dataclass
class TaskRun:
    """What one end-to-end run observed (seconds unless noted)."""

    task_id: str
    total: float
    submit: float
    phases_seen: dict[str, float]
    task: dict[str, Any]
    polls: int
    server: dict[str, float | None] = field(default_factory=dict)
    worker_task_s: float | None = None
    deliveries: int | None = None
    peak_rss_mb: float | None = None

    def phase_durations(self) -> dict[str, float]:
        """Durations of the phases seen while polling (first-seen to next first-seen; +-50 ms)."""
        seen = sorted(self.phases_seen.items(), key=lambda kv: kv[1])
        ends = [t for _, t in seen[1:]] + [self.total]
        return {name: round(end - t, 3) for (name, t), end in zip(seen, ends, strict=True) if name not in FINAL}


class Stack:
    def __init__(self, logdir: Path, run_id: str | None = None) -> None:
        self.run_id = run_id or secrets.token_hex(4)
        self.db_name = f"geoservice_bench_{self.run_id}"
        self.queue = f"geoservice-bench-{self.run_id}"
        self.database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}"
        self.dsn = f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"
        self.port = free_port()
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.client: httpx.Client | None = None
        self._db_created = False
        self.username = f"bench_{self.run_id}"
        self.password = secrets.token_urlsafe(18)
        self.user_id: uuid.UUID | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GEOSERVICE_DATABASE_URL": self.database_url,
            "GEOSERVICE_TASK_QUEUE": self.queue,
            "GEOSERVICE_REDIS_URL": REDIS_URL,
        }

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={self.database_url}", "upgrade", "head"],
                       cwd=ROOT, check=True, capture_output=True)
        self.user_id = self._create_user()
        self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)])
        self._spawn("worker", ["worker", "-c", "2", "--loglevel", "INFO"])
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        self._wait_ready()
        self.login()

    def _create_user(self) -> uuid.UUID:
        """The bench's own analyst (created directly in the database, as the tests and the demo do)."""
        from geoservice.config import Settings
        from geoservice.db.engine import make_engine, make_sessionmaker, transaction
        from geoservice.services.auth import create_user

        engine = make_engine(Settings(database_url=self.database_url, task_queue=self.queue), "cli")
        try:
            with transaction(make_sessionmaker(engine)) as session:
                user = create_user(session, username=self.username, password=self.password, roles=["analyst"])
                return user.id
        finally:
            engine.dispose()

    def login(self) -> None:
        """OAuth2 password flow; the Bearer token is renewed by ``request`` when it expires (401)."""
        assert self.client is not None
        r = self.client.post("/api/v1/auth/token", data={"username": self.username, "password": self.password})
        if r.status_code != 200:
            raise RuntimeError(f"login failed: {r.status_code} {r.text[:300]}")
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        r = self.client.request(method, url, **kwargs)
        if r.status_code == 401:
            self.login()
            r = self.client.request(method, url, **kwargs)
        return r

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.logdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "geoservice.cli", *args], cwd=ROOT, env=self.env(),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _wait_ready(self, timeout: float = 120) -> None:
        assert self.client is not None
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.logdir / name}.log")
            try:
                r = self.client.get("/readyz", params={"require_workers": "true"})
                last = r.text
                if r.status_code == 200 and len(self.pool_pids()) >= 2:
                    return
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"API/worker not ready after {timeout}s: {last}")

    def close(self) -> None:
        """Stop the children, drop the database, delete the queue's Redis keys (each step best effort)."""
        if self.client is not None:
            self.client.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._db_created:
            try:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning
                print(f"warning: could not drop database {self.db_name}: {exc}", file=sys.stderr)
        try:
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match=f"*{self.queue}*"):
                client.delete(key)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: could not clean Redis keys of {self.queue}: {exc}", file=sys.stderr)

    # --- helpers -------------------------------------------------------------------------------
    def pg(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def settle(self) -> None:
        """VACUUM ANALYZE + CHECKPOINT between timed runs, so no run pays for another's dead rows or dirty pages."""
        with self.pg() as conn:
            conn.execute("VACUUM (ANALYZE) spatial_data")
            conn.execute("VACUUM (ANALYZE) datasets")
            conn.execute("CHECKPOINT")

    def pool_pids(self) -> list[int]:
        worker = self.procs.get("worker")
        return children(worker.pid) if worker else []

    def reset_peak_rss(self) -> None:
        for pid in self.pool_pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_rss_mb(self) -> float | None:
        peaks = [kb for pid in self.pool_pids() if (kb := _status_kb(pid, "VmHWM")) is not None]
        return round(max(peaks) / 1024, 1) if peaks else None

    def worker_log(self) -> str:
        return (self.logdir / "worker.log").read_text(errors="replace")

    def worker_task_seconds(self, task_id: str) -> float | None:
        """Celery's own 'succeeded in X s' of the delivery that ran the task, from the worker log."""
        m = re.search(rf"\[{re.escape(task_id)}\] succeeded in ([0-9.]+)s: 'successful'", self.worker_log())
        return float(m.group(1)) if m else None

    def deliveries(self, task_id: str) -> int:
        """How many times the broker delivered the task (more than 1: a redelivery, skipped by the lease)."""
        return self.worker_log().count(f"[{task_id}] received")

    def delete_dataset(self, dataset_id: str | uuid.UUID) -> None:
        r = self.request("DELETE", f"/api/v1/datasets/{dataset_id}")
        if r.status_code not in (204, 404):
            r.raise_for_status()

    # --- one end-to-end run --------------------------------------------------------------------
    def run_task(self, body: dict[str, Any], *, poll_s: float = 0.05, timeout_s: float = 3600) -> TaskRun:
        """POST ``body`` to /api/v1/tasks and poll GET /api/v1/tasks/{id} every ``poll_s`` until final."""
        assert self.client is not None
        self.reset_peak_rss()
        wall0 = time.time()
        t0 = time.perf_counter()
        r = self.request("POST", "/api/v1/tasks", json=body)
        submit = time.perf_counter() - t0
        if r.status_code != 202:
            raise RuntimeError(f"submit failed: {r.status_code} {r.text[:500]}")
        task = r.json()
        seen: dict[str, float] = {}
        polls = 0
        while True:
            time.sleep(poll_s)
            snap = self.request("GET", f"/api/v1/tasks/{task['id']}").json()
            now = time.perf_counter() - t0
            polls += 1
            seen.setdefault(snap["status"] if snap["status"] in FINAL else (snap["phase"] or snap["status"]), now)
            if snap["status"] in FINAL:
                break
            if now > timeout_s:
                raise TimeoutError(f"task {task['id']} not final after {timeout_s}s: {snap['status']}")
        if snap["status"] != "successful":
            raise RuntimeError(f"task {task['id']} {snap['status']}: {snap.get('error_code')} "
                               f"{snap.get('error_message')}; see {self.logdir / 'worker.log'}")
        run = TaskRun(task_id=task["id"], total=now, submit=submit, phases_seen=seen, task=snap, polls=polls)
        run.server = _server_times(snap, wall0, now)
        run.peak_rss_mb = self.peak_rss_mb()
        run.worker_task_s = self.worker_task_seconds(task["id"])
        return run

    def results(self, task_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/api/v1/tasks/{task_id}/results")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _server_times(snap: dict[str, Any], wall0: float, total: float) -> dict[str, float | None]:
    """Server-side timestamps relative to the client's submit (same machine clock)."""
    created, started, completed = (_ts(snap.get(k)) for k in ("created_at", "started_at", "completed_at"))
    out: dict[str, float | None] = {
        "created": None if created is None else round(created - wall0, 3),
        "queue_latency": None if created is None or started is None else round(started - created, 3),
        "started_to_completed_at": None if started is None or completed is None else round(completed - started, 3),
        "completed_at_to_seen": None if completed is None else round(wall0 + total - completed, 3),
    }
    return out
