"""The service under test: a throwaway database and queue, the API and one worker as child processes.

``Stack`` creates ``geoservice_bench_<random>`` (migrated with ``alembic -x url=... upgrade head``),
starts ``geoservice api`` and ``geoservice worker`` (at its default concurrency unless ``concurrency`` is
given; ``restart_worker`` changes it) with that database and a queue of its own, and on ``close()`` stops
both process groups, drops the database and deletes the queue's Redis keys.
``Stack.run_task`` is one end-to-end run: POST a task, poll it every 50 ms until it is final, while a
``procwatch.ProcWatch`` records the CPU time of PostgreSQL and of the worker and the worker's peak RSS.
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
from procwatch import ProcWatch, Usage, group_pids

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("GEOSERVICE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GEOSERVICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FINAL = {"successful", "failed", "dismissed"}
PHASE_ORDER = ("accepted", "starting", "loading", "computing", "storing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    #: Largest VmHWM of any process of the worker's process group (main, pool, their children).
    peak_rss_mb: float | None = None
    #: CPU of PostgreSQL and of the worker during the run, and every worker process's peak RSS.
    usage: dict[str, Any] | None = None
    #: What distinguishes the run within its section (e.g. the worker's concurrency).
    label: str = ""

    def phase_durations(self) -> dict[str, float]:
        """Durations of the phases seen while polling (first-seen to next first-seen; +-50 ms)."""
        seen = sorted(self.phases_seen.items(), key=lambda kv: kv[1])
        ends = [t for _, t in seen[1:]] + [self.total]
        return {name: round(end - t, 3) for (name, t), end in zip(seen, ends, strict=True) if name not in FINAL}


class Stack:
    def __init__(self, logdir: Path, run_id: str | None = None, concurrency: int | None = None) -> None:
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
        #: ``geoservice worker -c <concurrency>``; None: no -c, the worker's default.
        self.concurrency = concurrency
        #: The pool size the running worker reports in its banner.
        self.worker_concurrency: int | None = None
        self.worker_logs: list[Path] = []
        self._postmaster: int | None = None

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
        self._spawn_worker()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        self._wait_ready()
        self.login()

    def _spawn_worker(self) -> None:
        args = ["worker", "--loglevel", "INFO"]
        if self.concurrency is not None:
            args[1:1] = ["-c", str(self.concurrency)]
        log = "worker" if not self.worker_logs else f"worker-{len(self.worker_logs) + 1}"
        self.worker_logs.append(self.logdir / f"{log}.log")
        self.worker_concurrency = None
        self._spawn("worker", args, log)

    def restart_worker(self, concurrency: int | None) -> None:
        """Stop the worker (warm shutdown) and start it again with ``-c concurrency`` (None: its default)."""
        worker = self.procs.pop("worker")
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)  # the main process only: Celery's warm shutdown ends its pool
        self._stop_proc(worker, term=False)
        self.concurrency = concurrency
        self._spawn_worker()
        self._wait_ready()

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

    def _spawn(self, name: str, args: list[str], log_name: str | None = None) -> None:
        log = (self.logdir / f"{log_name or name}.log").open("wb")
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
                # readyz may still count the heartbeat of a worker stopped a moment ago: also wait for
                # this worker's own "ready." line and all its pool processes.
                if r.status_code == 200 and self._worker_started():
                    return
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"API/worker not ready after {timeout}s: {last}")

    def _worker_started(self) -> bool:
        text = self.worker_logs[-1].read_text(errors="replace") if self.worker_logs else ""
        if self.worker_concurrency is None:
            m = re.search(r"concurrency: (\d+) \(prefork\)", text)
            self.worker_concurrency = int(m.group(1)) if m else None
        return (self.worker_concurrency is not None and " ready." in text
                and len(self.pool_pids()) >= self.worker_concurrency)

    @staticmethod
    def _stop_proc(proc: subprocess.Popen[bytes], term: bool = True) -> None:
        """SIGTERM the process group of ``proc`` (unless ``term`` is False: already sent); SIGKILL it after 20 s."""
        if term and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

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
            self._stop_proc(proc, term=False)
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

    def worker_pids(self) -> list[int]:
        """Every process of the worker's process group (the main process, the pool, their children)."""
        worker = self.procs.get("worker")
        return group_pids(worker.pid) if worker else []

    def postmaster_pid(self) -> int | None:
        """The PostgreSQL postmaster (parent of one of our backends), if it runs on this machine."""
        if self._postmaster is None:
            with self.pg() as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
                try:
                    ppid = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    return None
            if "postgres" in Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace"):
                self._postmaster = ppid
        return self._postmaster

    def watch(self, interval: float = 0.5) -> ProcWatch:
        """A started ``ProcWatch`` of the worker's process group and PostgreSQL (``.stop()`` returns the usage)."""
        worker, api = self.procs.get("worker"), self.procs.get("api")
        return ProcWatch(worker.pid if worker else None, self.postmaster_pid(), self.db_name, interval,
                         api_pid=api.pid if api else None).start()

    def worker_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.worker_logs if p.exists())

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
    def run_task(self, body: dict[str, Any], *, poll_s: float = 0.05, timeout_s: float = 3600,
                 check: bool = True) -> TaskRun:
        """POST ``body`` to /api/v1/tasks and poll GET /api/v1/tasks/{id} every ``poll_s`` until final.

        With ``check`` (default) a task that does not end ``successful`` raises; without, the run is
        returned as it ended (``run.task["status"]``). A timeout or the worker's exit always raises
        ``TaskFailed``, which carries the run so far (with its resource usage).
        """
        assert self.client is not None
        watch = self.watch()
        usage: Usage | None = None
        wall0 = time.time()
        t0 = time.perf_counter()
        run: TaskRun | None = None
        try:
            r = self.request("POST", "/api/v1/tasks", json=body)
            submit = time.perf_counter() - t0
            if r.status_code != 202:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text[:500]}")
            task = r.json()
            run = TaskRun(task_id=task["id"], total=0.0, submit=submit, phases_seen={}, task=task, polls=0)
            worker = self.procs["worker"]
            while True:
                time.sleep(poll_s)
                snap = self.request("GET", f"/api/v1/tasks/{task['id']}").json()
                now = time.perf_counter() - t0
                run.polls += 1
                run.total, run.task = now, snap
                run.phases_seen.setdefault(
                    snap["status"] if snap["status"] in FINAL else (snap["phase"] or snap["status"]), now)
                if snap["status"] in FINAL:
                    break
                if worker.poll() is not None:
                    raise TaskFailed(f"the worker exited ({worker.returncode}) while task {task['id']} was "
                                     f"{snap['status']}; see {self.worker_logs[-1]}", run)
                if now > timeout_s:
                    raise TaskFailed(f"task {task['id']} not final after {timeout_s}s: {snap['status']}", run)
        finally:
            usage = watch.stop()
            if run is not None:
                run.usage = usage.as_json()
                run.peak_rss_mb = usage.peak_rss_mb
        if check and snap["status"] != "successful":
            raise TaskFailed(f"task {task['id']} {snap['status']}: {snap.get('error_code')} "
                             f"{snap.get('error_message')}; see {self.worker_logs[-1]}", run)
        run.server = _server_times(snap, wall0, now)
        run.worker_task_s = self.worker_task_seconds(task["id"])
        return run

    def results(self, task_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/api/v1/tasks/{task_id}/results")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


class TaskFailed(RuntimeError):
    """An e2e run that did not end ``successful`` (or timed out, or lost its worker); ``run`` is what was seen."""

    def __init__(self, message: str, run: TaskRun) -> None:
        super().__init__(message)
        self.run = run


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
