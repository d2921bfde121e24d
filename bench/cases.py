"""The four comparisons: io, reproject, buffer, overlay. Each returns a ``Section`` of interleaved timings.

Per section the cases are: the service end to end (HTTP submit -> Celery -> load from PostGIS -> compute ->
store -> task successful), the same job in PostGIS SQL as what a user would build by hand to get what the
service gives (a logged table plus its GiST index, single core: the reference of the targets), the same
into an UNLOGGED table without index (the compute-only floor; single core, and with 2 parallel workers),
and the raw library on in-memory data. io compares our load/read paths with GeoPandas'.
The scaling, small and buffer_1m sections are in ``scale_cases.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
import synth
from geopandas import GeoDataFrame, GeoSeries
from harness import Case, Timing, interleave
from psycopg import sql
from pyproj import CRS, Transformer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from stack import Stack, TaskRun

PG_OUT = "bench_pg_out"
#: The main ratio of reproject, buffer and overlay, and its target (issue "Analyses that scale"): the
#: target value and the N it is stated for.
MAIN_RATIO = "e2e / PostGIS logged CTAS + GiST (1 core)"
MAIN_TARGETS = {"reproject": (1.0, 1_000_000), "buffer": (0.8, 100_000), "overlay": (0.8, 50_000)}


@dataclass
class Target:
    """A target of the issue: ``value op limit`` (op "<=" or ">="); ``at_size``: measured at the stated N."""

    label: str
    value: float | None
    op: str
    limit: float
    unit: str = "x"
    at_size: bool = True

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    @property
    def mark(self) -> str:
        mark = {True: "pass", False: "MISS", None: "n/a"}[self.ok]
        return mark if self.at_size else f"{mark} (not at target N)"

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "value": None if self.value is None else round(self.value, 4), "op": self.op,
                "target": self.limit, "unit": self.unit, "pass": self.ok, "at_target_size": self.at_size}


@dataclass
class Ctx:
    stack: Stack
    factory: sessionmaker[Session]
    engine: Engine
    owner_id: uuid.UUID
    runs: int
    log: Callable[[str], None]
    stages: bool = True
    conns: list[Any] = field(default_factory=list)
    #: HTTP connections the small section's client opens at most (``--small-connections``).
    small_connections: int = 16

    def close_conns(self) -> None:
        while self.conns:
            self.conns.pop().close()


@dataclass
class Section:
    name: str
    n: int
    unit: str
    timings: dict[str, Timing] = field(default_factory=dict)
    ratios: list[tuple[str, float]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    e2e_runs: list[TaskRun] = field(default_factory=list)
    setup: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    #: Figures of the sections that are not a set of timed cases (scaling, small, buffer_1m), for the JSON.
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The same for the "details" table: (label, formatted value).
    facts: list[tuple[str, str]] = field(default_factory=list)

    def ratio(self, label: str, num: str, den: str, target: tuple[str, float, int] | None = None) -> None:
        """Add the ratio of two medians; ``target`` = (op, limit, N it is stated for)."""
        if num in self.timings and den in self.timings:
            value = self.timings[num].median / self.timings[den].median
            self.ratios.append((label, value))
            if target:
                self.target(label, value, target[0], target[1], at_n=target[2])

    def target(self, label: str, value: float | None, op: str, limit: float, unit: str = "x",
               at_n: int | None = None) -> None:
        self.targets.append(Target(label, value, op, limit, unit, at_n is None or at_n == self.n))

    def target_for(self, label: str) -> Target | None:
        return next((t for t in self.targets if t.label == label), None)


# --- shared building blocks -------------------------------------------------------------------

def store(ctx: Ctx, name: str, gdf: GeoDataFrame) -> uuid.UUID:
    """Store ``gdf`` as a dataset with ``store_layer`` (the service's own import path)."""
    from geoservice.db.engine import transaction
    from geoservice.services.datasets import store_layer

    with transaction(ctx.factory) as session:
        stored = store_layer(session, ctx.owner_id, name, gdf, source={"format": "bench"})
        return stored.dataset.id


def drop_dataset(ctx: Ctx, dataset_id: uuid.UUID) -> None:
    """Delete a dataset with the repository (drops its partition, or cascades to its rows: either schema)."""
    from geoservice.db.repositories import datasets as repo

    with ctx.factory() as session:
        dataset = repo.get(session, dataset_id)
        if dataset is not None:
            repo.delete(session, dataset)
            session.commit()


def lit(value: Any) -> sql.Composable:
    return sql.Literal(str(value))


def e2e_case(ctx: Ctx, section: Section, label: str, body: dict[str, Any],
             check: Callable[[str], dict[str, Any]], key: str = "e2e", run_label: str = "") -> Case:
    """Time POST /api/v1/tasks -> successful; afterwards check the result dataset and delete it."""

    def after(run: TaskRun) -> dict[str, Any]:
        run.label = run_label
        section.e2e_runs.append(run)
        res = ctx.stack.results(run.task_id)["results"][0]
        info = {"task_id": run.task_id, "feature_count": res["data"]["feature_count"], **check(res["dataset_id"])}
        ctx.stack.delete_dataset(res["dataset_id"])
        ctx.stack.settle()
        return info

    return Case(key, label, lambda: ctx.stack.run_task(body), after=after, seconds=lambda run: run.total)


def pg_case(ctx: Ctx, key: str, label: str, select: sql.Composable, check_sql: str, *, parallel: bool,
            logged: bool = False) -> Case:
    """Time ``CREATE UNLOGGED TABLE bench_pg_out AS <select>`` (single core unless ``parallel``).

    ``logged``: what a user would build by hand to get what the service gives: ``CREATE TABLE ... AS``
    (a durable, WAL-logged table; committed, autocommit) followed by ``CREATE INDEX ... USING gist
    (geometry)``; both timed, each part also kept in the run's info.
    """
    conn = ctx.stack.pg()
    ctx.conns.append(conn)
    create = "CREATE TABLE {} AS " if logged else "CREATE UNLOGGED TABLE {} AS "
    statement = sql.SQL(create).format(sql.Identifier(PG_OUT)) + select
    index = sql.SQL("CREATE INDEX {} ON {} USING gist (geometry)").format(sql.Identifier(f"{PG_OUT}_geometry"),
                                                                        sql.Identifier(PG_OUT))
    parts: dict[str, float] = {}

    def before() -> None:
        conn.execute(f"DROP TABLE IF EXISTS {PG_OUT}")
        conn.execute(f"SET max_parallel_workers_per_gather = {2 if parallel else 0}")
        conn.execute(f"SET max_parallel_maintenance_workers = {2 if parallel else 0}")

    def run() -> None:
        t0 = time.perf_counter()
        conn.execute(statement)
        if logged:
            t1 = time.perf_counter()
            conn.execute(index)
            parts.update(ctas_s=round(t1 - t0, 4), index_s=round(time.perf_counter() - t1, 4))

    def after(_: Any) -> dict[str, Any]:
        row = conn.execute(check_sql.format(table=PG_OUT)).fetchone()
        conn.execute(f"DROP TABLE {PG_OUT}")
        ctx.stack.settle()
        return {**dict(zip(("rows", "check"), row or (), strict=False)), **parts}

    return Case(key, label, run, before=before, after=after)


def pg_cases(ctx: Ctx, what: str, select: sql.Composable, check_sql: str) -> list[Case]:
    """The three PostGIS cases of a section: logged CTAS + GiST (1 core), unlogged CTAS (1 core, 2 workers)."""
    return [
        pg_case(ctx, "pg_logged", f"PostGIS logged CTAS + GiST {what} (1 core)", select, check_sql,
                parallel=False, logged=True),
        pg_case(ctx, "pg", f"PostGIS unlogged CTAS {what} (1 core)", select, check_sql, parallel=False),
        pg_case(ctx, "pg_par", f"PostGIS unlogged CTAS {what} (2 parallel workers)", select, check_sql,
                parallel=True),
    ]


def main_ratios(sec: Section) -> None:
    """The main ratio (with its target) and the cost of durability + index in PostGIS."""
    limit, n = MAIN_TARGETS[sec.name]
    sec.ratio(MAIN_RATIO, "e2e", "pg_logged", target=("<=", limit, n))
    sec.ratio("e2e / PostGIS unlogged CTAS (1 core)", "e2e", "pg")
    sec.ratio("e2e / PostGIS unlogged CTAS (2 parallel)", "e2e", "pg_par")


def result_rows(ctx: Ctx, dataset_id: str, expr: str) -> dict[str, Any]:
    with ctx.stack.pg() as conn:
        rows, value = conn.execute(f"SELECT count(*), {expr} FROM spatial_data WHERE dataset_id = %s",
                                   (dataset_id,)).fetchone() or (None, None)
    return {"rows": rows, "check": value}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def warm_up(ctx: Ctx) -> None:
    """Small tasks of each type at once (2 each, more for a bigger pool), so every pool process has its
    engines and caches. Its datasets are deleted also when a task fails."""
    n = 2000
    tag = uuid.uuid4().hex[:6]
    made: list[uuid.UUID | str] = []
    try:
        a = store(ctx, f"warmup_a_{tag}", synth.polygons("warmup", n, synth.overlay_radius(n)))
        made.append(a)
        b = store(ctx, f"warmup_b_{tag}", synth.polygons("overlay_b", n, synth.overlay_radius(n)))
        made.append(b)
        p = store(ctx, f"warmup_points_{tag}", synth.points("warmup", n))
        made.append(p)
        bodies = [
            {"analysis_type": "reproject", "parameters": {"input": {"dataset_id": str(p)},
                                                          "target_crs": "EPSG:32650"}},
            {"analysis_type": "buffer", "parameters": {"input": {"dataset_id": str(a)},
                                                       "distance": {"value": 100, "unit": "m"}, "quad_segs": 8}},
            {"analysis_type": "overlay", "parameters": {"input": {"dataset_id": str(a)},
                                                        "overlay": {"dataset_id": str(b)}, "operation": "intersect"}},
        ]
        ids = []
        for body in bodies * max(2, ctx.stack.worker_concurrency or 2):
            r = ctx.stack.request("POST", "/api/v1/tasks", json={"name": "warm-up", **body})
            r.raise_for_status()
            ids.append(r.json()["id"])
        deadline = time.monotonic() + 300
        pending = set(ids)
        failed: list[str] = []
        while pending and time.monotonic() < deadline:
            time.sleep(0.2)
            for tid in list(pending):
                snap = ctx.stack.request("GET", f"/api/v1/tasks/{tid}").json()
                if snap["status"] in ("successful", "failed", "dismissed"):
                    if snap["status"] != "successful":
                        failed.append(f"{snap['analysis_type']} {snap['status']}: {snap.get('error_message')}")
                    pending.discard(tid)
        for tid in ids:
            if tid not in pending:
                made += [res["dataset_id"] for res in ctx.stack.results(tid)["results"] if res.get("dataset_id")]
        if failed:
            raise RuntimeError(f"warm-up task(s) failed: {failed[:3]}; see {ctx.stack.worker_logs[-1]}")
        if pending:
            raise RuntimeError("warm-up tasks did not finish in 300 s")
    finally:
        for ds in made:
            ctx.stack.delete_dataset(ds)
        ctx.stack.settle()


# --- io ----------------------------------------------------------------------------------------

def io_section(ctx: Ctx, n: int) -> Section:
    from geoservice.analysis.crs import crs_label
    from geoservice.db import gis_io
    from geoservice.db.repositories import datasets as repo
    from geoservice.services.datasets import infer_fields

    sec = Section("io", n, "polygons")
    ctx.log(f"[io] generating {n:,} polygons")
    gdf = synth.polygons("io", n, synth.overlay_radius(n))
    crs = CRS.from_epsg(4326)
    label, fields = crs_label(crs), infer_fields(gdf)
    bounds = [float(v) for v in gdf.total_bounds]

    def copy_ours() -> tuple[float, uuid.UUID]:
        with ctx.factory() as session:
            ds = repo.add(session, name=f"bench_io_{uuid.uuid4().hex[:8]}", owner_id=ctx.owner_id, srid=4326,
                          crs=label, geometry_type="Polygon", feature_count=n, extent=bounds, extent_crs84=bounds,
                          fields=fields, source={"format": "bench"})
            t0 = time.perf_counter()
            gis_io.copy_features(session, ds.id, gdf, srid=4326, crs_label=label)
            session.commit()
            return time.perf_counter() - t0, ds.id

    def drop_ours(result: tuple[float, uuid.UUID]) -> dict[str, Any]:
        with ctx.stack.pg() as conn:
            rows = conn.execute("SELECT count(*), sum(ST_NPoints(geometry)) FROM spatial_data WHERE dataset_id = %s",
                                (result[1],)).fetchone()
        drop_dataset(ctx, result[1])
        ctx.stack.settle()
        return {"rows": rows[0], "check": rows[1]} if rows else {}

    def drop_gpd_table() -> None:
        with ctx.stack.pg() as conn:
            conn.execute("DROP TABLE IF EXISTS bench_io_gpd")
        ctx.stack.settle()

    def gpd_rows(_: Any) -> dict[str, Any]:
        with ctx.stack.pg() as conn:
            rows = conn.execute("SELECT count(*), sum(ST_NPoints(geometry)) FROM bench_io_gpd").fetchone()
        ctx.stack.settle()
        return {"rows": rows[0], "check": rows[1]} if rows else {}

    ctx.log("[io] load: gis_io.copy_features vs GeoDataFrame.to_postgis")
    sec.timings.update(interleave([
        Case("load_ours", "load: gis_io.copy_features (binary COPY of EWKB, as implemented, + commit)", copy_ours,
             after=drop_ours, seconds=lambda r: r[0]),
        Case("load_gpd", "load: GeoDataFrame.to_postgis (new table + GiST)",
             lambda: gdf.to_postgis("bench_io_gpd", ctx.engine), before=drop_gpd_table, after=gpd_rows),
    ], ctx.runs, ctx.log))
    _, ds_id = copy_ours()  # kept for the reads (the last to_postgis table is kept too)
    ctx.stack.settle()

    def read_ours() -> GeoDataFrame:
        with ctx.factory() as session:
            return gis_io.read_features(session, ds_id, crs, fields)[0]

    spatial_query = f"SELECT fid, geometry, attributes FROM spatial_data WHERE dataset_id = '{ds_id}' ORDER BY fid"
    shape = lambda frame: {"rows": len(frame), "columns": list(frame.columns)}  # noqa: E731
    ctx.log("[io] read: gis_io.read_features vs geopandas.read_postgis")
    sec.timings.update(interleave([
        Case("read_ours", "read: gis_io.read_features (binary cursor + from_wkb)", read_ours, after=shape),
        Case("read_gpd", "read: geopandas.read_postgis (the to_postgis table)",
             lambda: gpd.read_postgis("SELECT * FROM bench_io_gpd", ctx.engine, geom_col="geometry"), after=shape),
        Case("read_gpd_sd", "read: geopandas.read_postgis (same spatial_data rows as ours)",
             lambda: gpd.read_postgis(spatial_query, ctx.engine, geom_col="geometry"), after=shape),
    ], ctx.runs, ctx.log))
    with ctx.stack.pg() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_io_gpd")
    drop_dataset(ctx, ds_id)
    ctx.stack.settle()
    sec.checks = {"checksum": "sum_npoints",
                  "library": {"rows": len(gdf), "check": float(shapely.get_num_coordinates(gdf.geometry.values).sum())},
                  "load_ours": _row_check(sec.timings["load_ours"].infos[-1]),
                  "load_gpd": _row_check(sec.timings["load_gpd"].infos[-1])}
    sec.ratio("load: to_postgis / ours", "load_gpd", "load_ours")
    sec.ratio("read: read_postgis (its table) / ours", "read_gpd", "read_ours")
    sec.ratio("read: read_postgis (spatial_data) / ours", "read_gpd_sd", "read_ours")
    return sec


# --- reproject ---------------------------------------------------------------------------------

def reproject_section(ctx: Ctx, n: int) -> Section:
    sec = Section("reproject", n, "points")
    ctx.log(f"[reproject] generating and storing {n:,} points (store_layer, untimed)")
    pts = synth.points("points", n)
    sec.setup["store_layer_s"], ds = timed(lambda: store(ctx, f"bench_points_{n}", pts))
    ctx.stack.settle()
    x, y = shapely.get_x(pts.geometry.values), shapely.get_y(pts.geometry.values)
    transformer = Transformer.from_crs(4326, synth.UTM, always_xy=True)
    series = GeoSeries(pts.geometry.values, crs=4326)
    body = {"name": "bench reproject", "analysis_type": "reproject",
            "parameters": {"input": {"dataset_id": str(ds)}, "target_crs": "EPSG:32650"}}
    select = sql.SQL("SELECT fid, attributes, ST_Transform(geometry, 32650) AS geometry FROM spatial_data "
                     "WHERE dataset_id = {}::uuid").format(lit(ds))
    check = "SELECT count(*), sum(ST_X(geometry)) FROM {table}"

    def raw_xy() -> float:
        ox, _ = transformer.transform(x, y)
        return float(np.sum(ox))

    def raw_to_crs() -> float:
        return float(np.sum(shapely.get_x(series.to_crs(synth.UTM).values)))

    ctx.log("[reproject] interleaved runs")
    sec.timings = interleave([
        e2e_case(ctx, sec, "e2e: POST reproject -> successful", body,
                 lambda d: result_rows(ctx, d, "sum(ST_X(geometry))")),
        *pg_cases(ctx, "ST_Transform", select, check),
        Case("raw_xy", "raw: pyproj Transformer.transform(x, y)", raw_xy, after=lambda s: {"check": s}),
        Case("raw_to_crs", "raw: GeoSeries.to_crs(32650)", raw_to_crs, after=lambda s: {"check": s}),
    ], ctx.runs, ctx.log)
    sec.checks = _checks(sec, "sum_x")
    if ctx.stages:
        sec.stages = stages_or_note(ctx, sec, "reproject", body["parameters"])
    ctx.stack.delete_dataset(ds)
    ctx.stack.settle()
    main_ratios(sec)
    for label, raw in (("pyproj x/y", "raw_xy"), ("to_crs", "raw_to_crs")):
        sec.ratio(f"e2e / raw ({label})", "e2e", raw)
    sec.ratio("PostGIS logged CTAS + GiST / unlogged CTAS (1 core)", "pg_logged", "pg")
    sec.ratio("PostGIS (1 core) / raw (pyproj x/y)", "pg", "raw_xy")
    sec.ratio("PostGIS (1 core) / raw (to_crs)", "pg", "raw_to_crs")
    return sec


# --- buffer ------------------------------------------------------------------------------------

def buffer_section(ctx: Ctx, n: int) -> Section:
    sec = Section("buffer", n, "polygons")
    ctx.log(f"[buffer] generating and storing {n:,} polygons (mean radius 500 m)")
    gdf = synth.polygons("buffer", n, synth.BUFFER_MEAN_RADIUS_M)
    sec.setup["store_layer_s"], ds = timed(lambda: store(ctx, f"bench_buffer_{n}", gdf))
    ctx.stack.settle()
    series = GeoSeries(gdf.geometry.values, crs=4326)
    params = {"input": {"dataset_id": str(ds)}, "distance": {"value": 100, "unit": "m"}, "quad_segs": 8}
    body = {"name": "bench buffer", "analysis_type": "buffer", "parameters": params}
    select = sql.SQL("SELECT fid, attributes, ST_Transform(ST_Buffer(ST_Transform(geometry, 32650), 100, "
                     "'quad_segs=8'), 4326) AS geometry FROM spatial_data WHERE dataset_id = {}::uuid").format(lit(ds))
    check = "SELECT count(*), sum(ST_NPoints(geometry)) FROM {table}"

    def raw() -> dict[str, Any]:
        utm = series.to_crs(synth.UTM)
        out = GeoSeries(shapely.buffer(utm.values, 100, quad_segs=8), crs=synth.UTM).to_crs(4326)
        return {"rows": len(out), "check": int(shapely.get_num_coordinates(out.values).sum())}

    ctx.log("[buffer] interleaved runs")
    sec.timings = interleave([
        e2e_case(ctx, sec, "e2e: POST buffer 100 m -> successful", body,
                 lambda d: result_rows(ctx, d, "sum(ST_NPoints(geometry))")),
        *pg_cases(ctx, "transform-buffer-transform", select, check),
        Case("raw", "raw: to_crs(32650) -> shapely.buffer(quad_segs=8) -> to_crs(4326)", raw, after=lambda r: r),
    ], ctx.runs, ctx.log)
    sec.checks = _checks(sec, "sum_npoints")
    if ctx.stages:
        sec.stages = stages_or_note(ctx, sec, "buffer", params)
    ctx.stack.delete_dataset(ds)
    ctx.stack.settle()
    _standard_ratios(sec)
    return sec


# --- overlay -----------------------------------------------------------------------------------

def overlay_section(ctx: Ctx, n: int) -> Section:
    sec = Section("overlay", n, "polygons per layer")
    radius = synth.overlay_radius(n)
    ctx.log(f"[overlay] generating and storing 2 x {n:,} polygons (mean radius {radius:.0f} m)")
    a, b = synth.polygons("overlay_a", n, radius), synth.polygons("overlay_b", n, radius)
    t_a, ds_a = timed(lambda: store(ctx, f"bench_overlay_a_{n}", a))
    t_b, ds_b = timed(lambda: store(ctx, f"bench_overlay_b_{n}", b))
    sec.setup = {"store_layer_a_s": t_a, "store_layer_b_s": t_b, "mean_radius_m": radius}
    ctx.stack.settle()
    ga, gb = np.asarray(a.geometry.values), np.asarray(b.geometry.values)
    params = {"input": {"dataset_id": str(ds_a)}, "overlay": {"dataset_id": str(ds_b)}, "operation": "intersect"}
    body = {"name": "bench overlay", "analysis_type": "overlay", "parameters": params}
    select = sql.SQL(
        "SELECT a.fid AS input_fid, b.fid AS overlay_fid, ST_Intersection(a.geometry, b.geometry) AS geometry "
        "FROM spatial_data a JOIN spatial_data b ON ST_Intersects(a.geometry, b.geometry) "
        "WHERE a.dataset_id = {}::uuid AND b.dataset_id = {}::uuid").format(lit(ds_a), lit(ds_b))
    check = "SELECT count(*), sum(ST_NPoints(geometry)) FROM {table}"

    def raw() -> dict[str, Any]:
        qi, qj = shapely.STRtree(gb).query(ga, predicate="intersects")
        out = shapely.intersection(ga[qi], gb[qj])
        return {"rows": len(out), "check": int(shapely.get_num_coordinates(out).sum())}

    ctx.log("[overlay] interleaved runs")
    sec.timings = interleave([
        e2e_case(ctx, sec, "e2e: POST overlay intersect -> successful", body,
                 lambda d: result_rows(ctx, d, "sum(ST_NPoints(geometry))")),
        *pg_cases(ctx, "ST_Intersection JOIN ST_Intersects", select, check),
        Case("raw", "raw: STRtree.query(intersects) + shapely.intersection", raw, after=lambda r: r),
    ], ctx.runs, ctx.log)
    sec.checks = _checks(sec, "sum_npoints")
    if ctx.stages:
        sec.stages = stages_or_note(ctx, sec, "overlay", params)
    ctx.stack.delete_dataset(ds_a)
    ctx.stack.delete_dataset(ds_b)
    ctx.stack.settle()
    _standard_ratios(sec)
    return sec


def _standard_ratios(sec: Section) -> None:
    main_ratios(sec)
    sec.ratio("e2e / raw", "e2e", "raw")
    sec.ratio("PostGIS logged CTAS + GiST / unlogged CTAS (1 core)", "pg_logged", "pg")
    sec.ratio("PostGIS (1 core) / raw", "pg", "raw")
    sec.ratio("PostGIS (2 parallel) / raw", "pg_par", "raw")


def _checks(sec: Section, what: str) -> dict[str, Any]:
    """Output rows and a checksum (sum of x or of vertex counts) from the last run of every case."""
    out: dict[str, Any] = {"checksum": what}
    for key, timing in sec.timings.items():
        info = timing.infos[-1] or {}
        out[key] = {"rows": info.get("rows", info.get("feature_count")), "check": _num(info.get("check"))}
    return out


def _row_check(info: dict[str, Any] | None) -> dict[str, Any]:
    info = info or {}
    return {"rows": info.get("rows"), "check": _num(info.get("check"))}


def _num(value: Any) -> Any:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return str(value)


# --- in-process breakdown of the worker's steps --------------------------------------------------

def stages_or_note(ctx: Ctx, sec: Section, analysis: str, params: dict[str, Any]) -> dict[str, float]:
    """``worker_stages``; if the worker's code no longer fits it, a note instead of losing the section's timings."""
    try:
        return worker_stages(ctx, analysis, params)
    except Exception as exc:  # noqa: BLE001 - the breakdown is optional, the timings are not
        note = f"stage breakdown skipped: {type(exc).__name__}: {exc}"
        ctx.log(f"[red][{analysis}] {note}[/]")
        sec.notes.append(note)
        sec.facts.append(("note", note))
        ctx.stack.settle()
        return {}


def worker_stages(ctx: Ctx, analysis: str, params: dict[str, Any]) -> dict[str, float]:
    """Run the worker's load -> compute -> store steps once in this process and time each sub-step.

    Load is what a one-piece run does (``analyses.prepare`` + ``load_layers``, the whole input at once: the
    breakdown shows where a single process spends its time); compute is the registered operation; store is
    ``store_layer`` as the runner calls it, plus its parts timed on their own (validation, attribute
    serialisation, EWKB, COPY). Everything written is rolled back.
    """
    import inspect

    from geoservice.analysis.summary import geodesic_summary
    from geoservice.analysis.validation import validate_geometries
    from geoservice.config import get_settings
    from geoservice.db import gis_io
    from geoservice.db.repositories import datasets as repo
    from geoservice.services import analyses
    from geoservice.services import datasets as svc
    from geoservice.services.auth import principal_for_user

    ctx.log(f"[{analysis}] in-process stage breakdown (1 run)")
    stages: dict[str, float] = {}

    def load() -> tuple[Any, Any]:
        with ctx.factory() as session:
            principal = principal_for_user(session, ctx.owner_id, via="internal")
            prepared = analyses.prepare(session, principal, analysis, params, plugins=get_settings().analysis_plugins,
                                        check_output_name=False)
            return prepared, analyses.load_layers(session, prepared)

    stages["load: prepare + load_layers (whole input)"], (prepared, layers) = timed(load)
    stages["compute: operation"], output = timed(lambda: analyses.compute(prepared.request, layers))
    out = output.gdf.reset_index(drop=True)
    stages["compute: of which geodesic_summary (metadata, timed again)"], _ = timed(lambda: geodesic_summary(out))
    validate_kw: dict[str, Any] = {"make_valid": True}
    if "allow_mixed" in inspect.signature(validate_geometries).parameters:
        validate_kw["allow_mixed"] = True
    stages["store: validate_geometries (repair on)"], _ = timed(lambda: validate_geometries(out, **validate_kw))
    stages["store: attribute_records (JSONB)"], _ = timed(lambda: gis_io.attribute_records(out))
    srid = 32650 if analysis == "reproject" else 4326
    geoms = np.asarray(out.geometry.array, dtype=object)
    stages["store: to_wkb (EWKB)"], _ = timed(lambda: shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True))
    store_kw: dict[str, Any] = {"make_valid": True}
    if "analysis_output" in inspect.signature(svc.store_layer).parameters:
        store_kw = {"analysis_output": True}
    with ctx.factory() as session:
        target = repo.add(session, name=f"bench_stage_copy_{uuid.uuid4().hex[:8]}", owner_id=ctx.owner_id,
                          srid=srid, crs=f"EPSG:{srid}", geometry_type="Geometry", feature_count=len(out), fields=[],
                          source={"format": "bench"})
        stages["store: copy_features (COPY incl. to_wkb + attribute_records)"], _ = timed(
            lambda: gis_io.copy_features(session, target.id, out, srid=srid, crs_label=f"EPSG:{srid}"))
        session.rollback()
    ctx.stack.settle()  # the rolled-back rows would otherwise slow the next COPY
    with ctx.factory() as session:
        stages["store: store_layer total (validate + fields + COPY, no commit)"], stored = timed(
            lambda: svc.store_layer(session, ctx.owner_id, f"bench_stage_{uuid.uuid4().hex[:8]}", output.gdf,
                                    source={"format": "bench"}, **store_kw))
        stages["_output_rows"] = float(stored.dataset.feature_count)
        session.rollback()
    ctx.stack.settle()
    for name, value in stages.items():
        if not name.startswith("_"):
            ctx.log(f"    {name}: {value:.3f} s")
    return stages
