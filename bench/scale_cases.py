"""The sections of the scaling targets: ``scaling``, ``small`` (default set) and ``buffer_1m`` (``--buffer-1m``).

* ``scaling``: the 100k-polygon buffer end to end with the worker restarted at ``-c 1`` and at ``-c 2``
  (interleaved, a fresh and warmed-up worker for every run); speed-up = median(-c 1) / median(-c 2), and
  the CPU share of PostgreSQL and of the worker during each run (``procwatch``).
* ``small``: N one-feature buffer tasks (inline GeoJSON point) submitted at once by one user; completed
  tasks per second from the first submit to the last ``successful``, and the submission rate; then the
  one-geometry SuperMap buffer latency (``supermap_latency.measure``) over 1,000 sequential requests.
* ``buffer_1m``: the buffer of 1,000,000 polygons (the 100k recipe), one e2e run: whether the task ends
  ``successful``, and the peak RSS of every worker process; then the PostGIS logged CTAS + GiST once.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections import Counter
from typing import Any

import httpx
import shapely
import supermap_latency
import synth
from cases import MAIN_RATIO, Ctx, Section, _checks, e2e_case, lit, pg_case, result_rows, store, timed, warm_up
from harness import Case, fmt_s, interleave
from psycopg import sql
from stack import FINAL, TaskFailed, TaskRun

SCALING_TARGET = (">=", 1.5, 100_000)
SMALL_TARGET_PER_S = (">=", 200.0, 1_000)
SUPERMAP_TARGETS_MS = {"p50_ms": 5.0, "p99_ms": 20.0}
RSS_TARGET_MB = (600.0, 1_000_000)
SUPERMAP_REQUESTS, SUPERMAP_WARMUP = 1000, 50
CHECK_NPOINTS = "SELECT count(*), sum(ST_NPoints(geometry)) FROM {table}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _buffer_data(ctx: Ctx, sec: Section, n: int) -> tuple[str, dict[str, Any], sql.Composable]:
    """Store the buffer section's polygons (N of them); return the dataset id, the task body and the SELECT."""
    ctx.log(f"[{sec.name}] generating and storing {n:,} polygons (mean radius 500 m)")
    layer = [synth.polygons("buffer", n, synth.BUFFER_MEAN_RADIUS_M)]
    sec.setup["store_layer_s"], ds = timed(lambda: store(ctx, f"bench_{sec.name}_{n}", layer[0]))
    layer.clear()  # 1M polygons hold GBs in this process
    gc.collect()
    ctx.stack.settle()
    params = {"input": {"dataset_id": str(ds)}, "distance": {"value": 100, "unit": "m"}, "quad_segs": 8}
    body = {"name": f"bench {sec.name}", "analysis_type": "buffer", "parameters": params}
    select = sql.SQL("SELECT fid, attributes, ST_Transform(ST_Buffer(ST_Transform(geometry, 32650), 100, "
                     "'quad_segs=8'), 4326) AS geometry FROM spatial_data WHERE dataset_id = {}::uuid").format(lit(ds))
    return str(ds), body, select


# --- scaling -----------------------------------------------------------------------------------

def scaling_section(ctx: Ctx, n: int) -> Section:
    sec = Section("scaling", n, "polygons")
    ds, body, _ = _buffer_data(ctx, sec, n)
    initial = ctx.stack.concurrency

    def case(c: int) -> Case:
        e2e = e2e_case(ctx, sec, f"e2e: POST buffer 100 m -> successful, worker -c {c}", body,
                       lambda d: result_rows(ctx, d, "sum(ST_NPoints(geometry))"), key=f"e2e_c{c}",
                       run_label=f"-c {c}")

        def before() -> None:
            ctx.log(f"  [scaling] restarting the worker with -c {c}, warm-up")
            ctx.stack.restart_worker(c)
            warm_up(ctx)

        e2e.before = before
        return e2e

    try:
        sec.timings = interleave([case(1), case(2)], ctx.runs, ctx.log)
    finally:
        ctx.log(f"[scaling] restarting the worker at {'its default concurrency' if initial is None else initial}")
        ctx.stack.restart_worker(initial)
        warm_up(ctx)
    sec.checks = _checks(sec, "sum_npoints")
    ctx.stack.delete_dataset(ds)
    ctx.stack.settle()
    sec.ratio("speed-up: e2e -c 1 / e2e -c 2", "e2e_c1", "e2e_c2", target=SCALING_TARGET)
    for c in (1, 2):
        runs = [r for r in sec.e2e_runs if r.label == f"-c {c}"]
        usage = [r.usage or {} for r in runs]
        figures = {k: _median([u.get(k) for u in usage]) for k in ("pg_share", "pg_db_share", "worker_share",
                                                                  "worker_peak_rss_mb")}
        sec.metrics[f"c{c}"] = {"e2e_median_s": sec.timings[f"e2e_c{c}"].median, **figures,
                                "runs_usage": usage}
        sec.facts += [
            (f"-c {c}: e2e median", fmt_s(sec.timings[f"e2e_c{c}"].median)),
            (f"-c {c}: PostgreSQL CPU share, server-wide (bench database only)",
             f"{_pct(figures['pg_share'])} ({_pct(figures['pg_db_share'])})"),
            (f"-c {c}: worker CPU share", _pct(figures["worker_share"])),
            (f"-c {c}: worker peak RSS (largest process)", f"{figures['worker_peak_rss_mb'] or 0:,.0f} MB"),
        ]
    sec.notes.append("CPU shares: CPU seconds of the process tree during the run / (wall x cores); medians of runs")
    return sec


# --- small -------------------------------------------------------------------------------------

async def _submit_all(base: str, headers: dict[str, str], bodies: list[dict[str, Any]], t0: float,
                      connections: int) -> list[tuple[int, str, float, float]]:
    """POST every body at once over at most ``connections`` connections (httpx queues the rest until one is
    free); return (HTTP status or 0, task id or error text, start, end) per request (s from t0)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(120, pool=None)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout) as client:
        async def one(body: dict[str, Any]) -> tuple[int, str, float, float]:
            start = time.perf_counter() - t0
            try:
                r = await client.post("/api/v1/tasks", json=body)
            except httpx.HTTPError as exc:
                return 0, f"{type(exc).__name__}: {exc}"[:200], start, time.perf_counter() - t0
            end = time.perf_counter() - t0
            return r.status_code, r.json()["id"] if r.status_code == 202 else r.text[:200], start, end

        return await asyncio.gather(*(one(b) for b in bodies))


async def _delete_all(base: str, headers: dict[str, str], dataset_ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=httpx.Limits(max_connections=8),
                                 timeout=httpx.Timeout(120, pool=None)) as client:
        await asyncio.gather(*(client.delete(f"/api/v1/datasets/{d}") for d in dataset_ids))


def _headers(ctx: Ctx) -> tuple[str, dict[str, str]]:
    ctx.stack.login()  # a fresh token (15 min)
    assert ctx.stack.client is not None
    return str(ctx.stack.client.base_url).rstrip("/"), {"Authorization": ctx.stack.client.headers["Authorization"]}


def small_section(ctx: Ctx, n: int) -> Section:
    sec = Section("small", n, "tasks")
    pts = synth.points("small", n).geometry.values
    bodies = [{"name": f"bench small {i}", "analysis_type": "buffer",
               "parameters": {"input": {"geojson": {"type": "Point", "coordinates": [float(x), float(y)]}},
                              "distance": {"value": 100, "unit": "m"}}}
              for i, (x, y) in enumerate(zip(shapely.get_x(pts), shapely.get_y(pts), strict=True))]
    base, headers = _headers(ctx)
    timeout_s = max(120.0, 0.5 * n)
    ctx.log(f"[small] {n:,} one-point buffer tasks, submitted at once ({ctx.small_connections} connections at most)")
    watch = ctx.stack.watch()
    cpu0 = time.process_time()
    wall0, t0 = time.time(), time.perf_counter()
    try:
        sent = asyncio.run(_submit_all(base, headers, bodies, t0, ctx.small_connections))
        ids = [ref for status, ref, _, _ in sent if status == 202]
        counts: tuple[Any, ...] = (0, 0, None, None)
        seen = None
        with ctx.stack.pg() as conn:
            while True:
                counts = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'successful'), count(*) FILTER (WHERE status = ANY(%s)), "
                    "max(completed_at), max(started_at) FROM analysis_tasks WHERE id = ANY(%s::uuid[])",
                    (sorted(FINAL), ids)).fetchone() or counts
                now = time.perf_counter() - t0
                if counts[1] >= len(ids):
                    seen = now
                    break
                if now > timeout_s:
                    break
                time.sleep(0.05)
    finally:
        usage = watch.stop()
        client_cpu = time.process_time() - cpu0
    successful, final, last_completed, last_started = counts
    submit_end = max((end for _, _, _, end in sent), default=0.0)
    latencies = sorted(end - start for _, _, start, end in sent)
    errors = Counter(status or ref.split(":")[0] for status, ref, _, _ in sent if status != 202)
    rate = successful / seen if seen else None  # successful ones only; the "all successful" target is apart
    m: dict[str, Any] = {
        "tasks": n, "submitted": len(ids), "submit_errors": {str(k): v for k, v in errors.items()},
        "submit_wall_s": round(submit_end, 3), "submit_per_s": round(len(ids) / submit_end, 1) if submit_end else None,
        "submit_latency_p50_ms": round(1000 * supermap_latency.percentile(latencies, 50), 1),
        "submit_latency_p99_ms": round(1000 * supermap_latency.percentile(latencies, 99), 1),
        "successful": successful, "final": final, "last_successful_seen_s": seen,
        "completed_per_s": None if rate is None else round(rate, 1),
        "server_last_completed_at_s": None if last_completed is None else round(last_completed.timestamp() - wall0, 3),
        "server_last_started_at_s": None if last_started is None else round(last_started.timestamp() - wall0, 3),
        "connections": ctx.small_connections, "client_cpu_s": round(client_cpu, 3), "usage": usage.as_json(),
    }
    if final < len(ids) or successful < len(ids):
        with ctx.stack.pg() as conn:
            m["not_successful"] = dict(conn.execute(
                "SELECT status || coalesce(': ' || error_code, ''), count(*) FROM analysis_tasks "
                "WHERE id = ANY(%s::uuid[]) AND status <> 'successful' GROUP BY 1", (ids,)).fetchall())
    sec.target("small tasks: every one submitted (202) and successful", float(successful == n), ">=", 1.0,
               unit="bool")
    sec.target("small tasks completed per second (first submit -> last successful)", rate, *SMALL_TARGET_PER_S[:2],
               unit="/s", at_n=SMALL_TARGET_PER_S[2])
    sec.facts += [
        ("tasks submitted (HTTP 202) / asked",
         f"{len(ids):,} / {n:,}" + (f"  errors {dict(errors)}" if errors else "")),
        ("submission: first POST -> last 202", f"{fmt_s(submit_end)} = {m['submit_per_s'] or 0:,.0f} tasks/s "
         f"(POST p50 {m['submit_latency_p50_ms']:.0f} ms, p99 {m['submit_latency_p99_ms']:.0f} ms)"),
        ("tasks successful / final", f"{successful:,} / {final:,}" + (
            f"  {m['not_successful']}" if m.get("not_successful") else "")),
        ("first POST -> last successful seen (DB polled every 50 ms)",
         "timed out after " + fmt_s(timeout_s) if seen is None else f"{fmt_s(seen)} = {n / seen:,.0f} tasks/s"),
        ("first POST -> last completed_at (server)", fmt_s(m["server_last_completed_at_s"])),
        ("CPU share: PostgreSQL (bench db) / worker / API",
         f"{_pct(usage.pg_share)} ({_pct(usage.pg_db_share)}) / {_pct(usage.worker_share)} / "
         f"{_pct(usage.api_share)}  (bench client {client_cpu:.1f} s CPU)"),
    ]
    ctx.log(f"[small] {successful:,}/{n:,} successful; last seen at {fmt_s(seen)}; deleting the result datasets")
    with ctx.stack.pg() as conn:
        results = [str(r[0]) for r in conn.execute(
            "SELECT result_dataset_id FROM analysis_tasks WHERE id = ANY(%s::uuid[]) AND result_dataset_id IS NOT NULL",
            (ids,)).fetchall()]
    base, headers = _headers(ctx)
    asyncio.run(_delete_all(base, headers, results))
    ctx.stack.settle()

    ctx.log(f"[small] SuperMap geometry buffer: {SUPERMAP_REQUESTS} sequential requests (+{SUPERMAP_WARMUP} warm-up)")
    token = headers["Authorization"].removeprefix("Bearer ")
    times = supermap_latency.measure(base, token, SUPERMAP_REQUESTS, SUPERMAP_WARMUP, False)["buffer"]
    fig = supermap_latency.figures(times)
    m["supermap_buffer"] = {k: round(v, 3) for k, v in fig.items()}
    for key, limit in SUPERMAP_TARGETS_MS.items():
        sec.target(f"SuperMap one-geometry buffer {key.removesuffix('_ms')} ({SUPERMAP_REQUESTS} sequential)",
                   fig[key], "<=", limit, unit="ms")
    sec.facts.append(("SuperMap geometry buffer latency", "  ".join(
        f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in fig.items() if k != "requests")))
    sec.metrics = m
    ctx.stack.settle()
    return sec


# --- buffer_1m ---------------------------------------------------------------------------------

def buffer_1m_section(ctx: Ctx, n: int) -> Section:
    """One e2e run and one PostGIS logged CTAS + GiST (``--runs`` does not apply: each takes minutes)."""
    sec = Section("buffer_1m", n, "polygons")
    ds, body, select = _buffer_data(ctx, sec, n)
    outcome: dict[str, Any] = {}

    def e2e() -> TaskRun:
        try:
            return ctx.stack.run_task(body, check=False, timeout_s=3600)
        except TaskFailed as exc:
            outcome["error"] = str(exc)
            return exc.run

    def after(run: TaskRun) -> dict[str, Any]:
        sec.e2e_runs.append(run)
        outcome["status"] = run.task.get("status")
        if run.task.get("status") != "successful":
            outcome.setdefault("error", f"{run.task.get('status')}: {run.task.get('error_code')} "
                                        f"{run.task.get('error_message')}")
            return {"task_id": run.task_id, "status": run.task.get("status")}
        res = ctx.stack.results(run.task_id)["results"][0]
        info = {"task_id": run.task_id, "feature_count": res["data"]["feature_count"],
                **result_rows(ctx, res["dataset_id"], "sum(ST_NPoints(geometry))")}
        ctx.stack.delete_dataset(res["dataset_id"])
        ctx.stack.settle()
        return info

    sec.timings = interleave([
        Case("e2e", "e2e: POST buffer 100 m -> final (1 run)", e2e, after=after, seconds=lambda run: run.total),
        pg_case(ctx, "pg_logged", "PostGIS logged CTAS + GiST transform-buffer-transform (1 core, 1 run)", select,
                CHECK_NPOINTS, parallel=False, logged=True),
    ], 1, ctx.log)
    ctx.close_conns()
    sec.checks = _checks(sec, "sum_npoints")
    ctx.stack.delete_dataset(ds)
    ctx.stack.settle()
    ok = outcome.get("status") == "successful"
    run = sec.e2e_runs[-1]
    usage = run.usage or {}
    sec.target("task ends successful", 1.0 if ok else 0.0, ">=", 1.0, unit="bool", at_n=RSS_TARGET_MB[1])
    sec.target("worker peak RSS, largest of every worker process", run.peak_rss_mb, "<=", RSS_TARGET_MB[0],
               unit="MB", at_n=RSS_TARGET_MB[1])
    if ok:
        sec.ratio(MAIN_RATIO, "e2e", "pg_logged")
    sec.metrics = {"task_status": outcome.get("status"), "error": outcome.get("error"), "usage": usage}
    sec.facts.append(("task", f"{outcome.get('status')} after {fmt_s(run.total)}"
                      + (f": {outcome['error'][:160]}" if not ok and outcome.get("error") else "")))
    for pid, proc in (usage.get("worker_processes") or {}).items():
        sec.facts.append((f"worker process {pid} ({proc['role']}{', exited during the run' if proc['exited'] else ''})",
                          f"peak RSS {proc['peak_rss_mb'] or 0:,.0f} MB"))
    sec.facts.append(("CPU share: PostgreSQL (bench db) / worker", f"{_pct(usage.get('pg_share'))} "
                      f"({_pct(usage.get('pg_db_share'))}) / {_pct(usage.get('worker_share'))}"))
    return sec
