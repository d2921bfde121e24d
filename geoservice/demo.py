"""``geoservice demo``: the main job end to end on the sample data, with progress bars.

Starts the API and a worker as child processes (against the configured PostGIS and Redis),
imports the sample datasets over HTTP, submits analysis tasks, follows each task's server-sent
event stream with a progress bar, and prints a summary of every result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
console = Console() if sys.stdout.isatty() else Console(width=140)


def _start(args: list[str], name: str) -> subprocess.Popen[bytes]:
    log = open(f"/tmp/geoservice-demo-{name}.log", "wb")  # noqa: SIM115 (lives as long as the child)
    return subprocess.Popen([sys.executable, "-m", "geoservice.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ.copy())


def _wait_ready(client: httpx.Client, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = client.get("/readyz", params={"require_workers": "true"})
            last = r.json()
            if r.status_code == 200:
                return
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"API/worker not ready after {timeout}s: {last}")


def _dataset(client: httpx.Client, name: str, path: Path) -> dict[str, Any]:
    page = client.get("/api/v1/datasets", params={"limit": 1000}).json()
    for ds in page["data"]:
        if ds["name"] == name:
            return ds  # type: ignore[no-any-return]
    with path.open("rb") as fh:
        r = client.post("/api/v1/datasets", files={"file": (path.name, fh, "application/geo+json")},
                        data={"name": name})
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def _follow(client: httpx.Client, task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    bar = progress.add_task(f"{task['analysis_type']}: {task['name']}", total=100)
    with client.stream("GET", f"/api/v1/tasks/{task['id']}/events", timeout=None) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                snap = orjson.loads(line[5:])
                progress.update(bar, completed=snap["progress"], description=(
                    f"{task['analysis_type']}: {task['name']} [{snap['phase'] or snap['status']}]"))
                if event == "final":
                    break
    return client.get(f"/api/v1/tasks/{task['id']}/results").json()  # type: ignore[no-any-return]


def demo_jobs(datasets: dict[str, dict[str, Any]]) -> list[Any]:
    """The analyses the demo runs on the sample data; a job may use the results of earlier ones."""
    countries, places = datasets["countries"]["id"], datasets["populated_places"]["id"]
    return [
        lambda _r: {"name": "countries to Equal Earth", "analysis_type": "reproject",
                    "parameters": {"input": {"dataset_id": countries}, "target_crs": "EPSG:8857"}},
        lambda _r: {"name": "50 km around populated places", "analysis_type": "buffer",
                    "parameters": {"input": {"dataset_id": places}, "distance": {"value": 50, "unit": "km"},
                                   "quad_segs": 8}},
        lambda r: {"name": "countries within 50 km of a place", "analysis_type": "overlay",
                   "parameters": {"input": {"dataset_id": countries}, "operation": "intersect",
                                  "overlay": {"dataset_id": r[-1]["results"][0]["dataset_id"]},
                                  "input_fields": ["name", "continent"], "overlay_fields": ["name"]}},
    ]


def _summary(results: list[dict[str, Any]]) -> Table:
    table = Table(title="geoservice demo: results")
    for col in ("task", "status", "features", "CRS", "geodesic total", "detail"):
        table.add_column(col)
    for res in results:
        task = res["task"]
        data = res["results"][0]["data"] if res["results"] else {}
        meta = res["results"][0]["result_metadata"] if res["results"] else {}
        total = ""
        if "geodesic_area_m2" in data:
            total = f"{data['geodesic_area_m2'] / 1e6:,.0f} km²"
        elif "geodesic_length_m" in data:
            total = f"{data['geodesic_length_m'] / 1e3:,.0f} km"
        detail = task.get("error_message") or _detail(meta)
        table.add_row(task["name"], task["status"], str(data.get("feature_count", "")), str(data.get("crs", "")),
                      total, detail)
    return table


def _detail(meta: dict[str, Any]) -> str:
    if "transformation" in meta:
        tr = meta["transformation"] or {}
        return f"{tr.get('description', '')} (accuracy {tr.get('accuracy_m', '?')} m)"
    if "max_scale_error" in meta:
        return f"{meta.get('strategy')}; max scale error {meta['max_scale_error']:.1e}"
    if "operation" in meta:
        return f"{meta['operation']}: {meta.get('input_feature_count', '?')} x {meta.get('overlay_feature_count', '?')}"
    return str(meta.get("strategy", ""))


def _demo_login(client: httpx.Client) -> str:
    """Create (or reset) the ``demo`` analyst with a fresh random password and log in over HTTP."""
    import secrets

    from sqlalchemy import select

    from geoservice import security
    from geoservice.config import get_settings
    from geoservice.db.engine import make_engine, make_sessionmaker, transaction
    from geoservice.db.models import User
    from geoservice.services.auth import assign_role, create_user

    password = secrets.token_urlsafe(18)
    engine = make_engine(get_settings(), "cli")
    with transaction(make_sessionmaker(engine)) as session:
        user = session.execute(select(User).where(User.username == "demo")).scalar_one_or_none()
        if user is None:
            create_user(session, username="demo", password=password, roles=["analyst"])
        else:
            user.hashed_password = security.hash_password(password)
            assign_role(session, user.id, "analyst")
    engine.dispose()
    r = client.post("/api/v1/auth/token", data={"username": "demo", "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


def run_demo(*, host: str, port: int, keep_serving: bool) -> int:
    """Run the demo; return the process exit code."""
    procs = [_start(["api", "--host", host, "--port", str(port)], "api"), _start(["worker", "-c", "2"], "worker")]
    base = f"http://{host}:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            console.print(f"[bold]geoservice demo[/] API {base}, logs in /tmp/geoservice-demo-*.log")
            _wait_ready(client)
            console.print("API, PostGIS, Redis and a worker are ready")
            client.headers["Authorization"] = f"Bearer {_demo_login(client)}"
            console.print("logged in as [cyan]demo[/] (analyst) with the OAuth2 password flow")
            datasets = {n: _dataset(client, n, SAMPLE_DIR / f"{n}.geojson") for n in ("countries", "populated_places")}
            for ds in datasets.values():
                console.print(f"dataset [cyan]{ds['name']}[/]: {ds['feature_count']} {ds['geometry_type']} "
                              f"features, {ds['crs']}")
            results = []
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                          TimeElapsedColumn(), console=console) as progress:
                for make_job in demo_jobs(datasets):
                    r = client.post("/api/v1/tasks", json=make_job(results))
                    r.raise_for_status()
                    results.append(_follow(client, r.json(), progress))
            console.print(_summary(results))
            failed = [r for r in results if r["task"]["status"] != "successful"]
            if keep_serving:
                console.print(f"serving on {base} (Ctrl-C to stop)")
                procs[0].wait()
            return 1 if failed else 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
