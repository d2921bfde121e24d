"""Latency of a one-geometry buffer through the SuperMap iServer surface (issue #5): p50 / p99 over N requests.

    .venv/bin/python bench/supermap_latency.py              # 1,000 timed requests (+ 50 warm-up)
    .venv/bin/python bench/supermap_latency.py -n 200 --json

What is timed: one ``POST /iserver/services/spatialanalyst-sample/restjsr/spatialanalyst/geometry/buffer.json
?returnContent=true`` with the body the real iClient sends (form-encoded, single-quoted JSON-like text; a
point in EPSG:4326, 10 segments per half circle), answered by ``geoservice api`` (uvicorn, one process) on
loopback, sequentially over one keep-alive connection, measured in the client from sending the request to
having read the whole response. Each request authenticates (``?token=``), parses, buffers, records an
``analysis_tasks`` row and commits, as in production.

It needs PostgreSQL + PostGIS at 127.0.0.1:5432 (trust auth) and Redis at 127.0.0.1:6379, like the test
suite. It creates a throwaway database ``geoservice_bench_sm_<random>`` (migrated with alembic) and drops it
at the end, and stops the API process it started, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("GEOSERVICE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GEOSERVICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PATH = "/iserver/services/spatialanalyst-sample/restjsr/spatialanalyst/geometry/buffer.json"
# What the iClient sent for a geometry buffer (shared/reference/supermap-rest.md section 2.3), with a
# distance in degrees (the geometry's CRS units, as iServer).
BODY = (
    b"{'analystParameter':{'endType':\"ROUND\",'leftDistance':{'exp':null,'value':0.01},'rightDistance':{'exp':null,"
    b"'value':0.01},'semicircleLineSegment':10,'radiusUnit':\"METER\"},'sourceGeometry':{'id':0,'style':null,'parts':"
    b"[1],'points':[{'id':\"SuperMap.Geometry_3\",'bounds':null,'SRID':null,'x':116.39,'y':39.9,'tag':null,'type':"
    b"\"Point\",'geometryType':\"Point\"}],'type':\"POINT\",'prjCoordSys':{'epsgCode':4326}},'sourceGeometrySRID':null}"
)
HEADERS = {"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8", "Accept": "*/*"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of the sorted values."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Stack:
    """A throwaway database and one ``geoservice api`` process; ``close()`` removes both."""

    def __init__(self) -> None:
        self.db = f"geoservice_bench_sm_{secrets.token_hex(4)}"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="geoservice-bench-supermap-", suffix=".log", delete=False)
        self.env = {**os.environ, "GEOSERVICE_DATABASE_URL": self.url, "GEOSERVICE_REDIS_URL": REDIS_URL,
                    "GEOSERVICE_ENV": "test", "GEOSERVICE_LOG_LEVEL": "WARNING",
                    "GEOSERVICE_TASK_QUEUE": f"geoservice-bench-sm-{secrets.token_hex(3)}"}

    def start(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={self.url}", "upgrade", "head"], cwd=ROOT,
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geoservice.cli", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited; see {self.log.name}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"the API did not start; see {self.log.name}")

    def token(self) -> str:
        """Create an analyst and log in through the API (OAuth2 password flow)."""
        sys.path.insert(0, str(ROOT))
        from geoservice.config import Settings
        from geoservice.db.engine import make_engine, make_sessionmaker, transaction
        from geoservice.services.auth import create_user

        username, password = f"bench_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        engine = make_engine(Settings(database_url=self.url, redis_url=REDIS_URL), "cli")
        with transaction(make_sessionmaker(engine)) as session:
            create_user(session, username=username, password=password, roles=["analyst"])
        engine.dispose()
        r = httpx.post(self.base + "/api/v1/auth/token", data={"username": username, "password": password})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        self.log.close()


def _timed(client: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    r = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    r.read()
    return (time.perf_counter() - start) * 1000, r


def measure(base: str, token: str, n: int, warmup: int, baseline: bool) -> dict[str, list[float]]:
    """Send ``warmup`` then ``n`` timed requests sequentially; return the latencies (ms) per kind.

    With ``baseline``, each buffer request is followed by an authenticated ``GET /api/v1/users/me`` (token
    check plus one user lookup, nothing written), so the share of authentication and of the machine's load
    shows next to the buffer's own cost.
    """
    url = f"{base}{PATH}?token={token}&returnContent=true"
    times: dict[str, list[float]] = {"buffer": [], **({"users_me": []} if baseline else {})}
    with httpx.Client(timeout=30) as client:
        for i in range(warmup + n):
            elapsed, r = _timed(client, "POST", url, content=BODY, headers=HEADERS)
            if r.status_code != 200 or b'"resultGeometry"' not in r.content:
                raise RuntimeError(f"request {i} failed: {r.status_code} {r.content[:300]!r}")
            if i >= warmup:
                times["buffer"].append(elapsed)
            if baseline:
                elapsed, r = _timed(client, "GET", f"{base}/api/v1/users/me",
                                    headers={"Authorization": f"Bearer {token}"})
                if r.status_code != 200:
                    raise RuntimeError(f"baseline request {i} failed: {r.status_code} {r.content[:300]!r}")
                if i >= warmup:
                    times["users_me"].append(elapsed)
    return times


def figures(times: list[float]) -> dict[str, float]:
    return {"requests": len(times), "p50_ms": percentile(times, 50), "p90_ms": percentile(times, 90),
            "p99_ms": percentile(times, 99), "mean_ms": statistics.fmean(times), "max_ms": max(times),
            "min_ms": min(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=1000, help="timed requests (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests first (default 50)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    parser.add_argument("--baseline", action="store_true",
                        help="interleave an authenticated GET /api/v1/users/me, timed the same way")
    args = parser.parse_args()
    stack = Stack()

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        times = measure(stack.base, stack.token(), args.n, args.warmup, args.baseline)
    except KeyboardInterrupt:
        return 130
    finally:
        stack.close()
    report = {kind: figures(values) for kind, values in times.items()}
    load = os.getloadavg()
    print(f"SuperMap geometry buffer (one point, the iClient's body), {args.n} sequential requests on loopback "
          f"(load average {load[0]:.2f})")
    for kind, values in report.items():
        label = "buffer  " if kind == "buffer" else "users/me"
        print(f"  {label}  " + "  ".join(f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in values.items()
                                        if k != "requests"))
    if args.json:
        print(json.dumps({**report, "load_average": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
