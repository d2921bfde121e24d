"""geoservice benchmark: the service end to end vs PostGIS SQL vs the raw libraries, in one command.

    .venv/bin/python bench/run.py [--quick] [--only io,reproject,buffer,overlay,scaling,small] [--runs 3]
    .venv/bin/python bench/run.py --only buffer_1m      # or --buffer-1m to add it to the default set

Creates a throwaway database and queue, starts the API and one worker (at its default concurrency) as
subprocesses, runs the selected comparisons (median of --runs interleaved runs), checks the targets,
prints tables and writes bench/results/<date>[-quick].json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import cases  # noqa: E402
import report  # noqa: E402
import scale_cases  # noqa: E402
import synth  # noqa: E402
from rich.console import Console  # noqa: E402
from stack import Stack  # noqa: E402

SIZES = {"io": 100_000, "reproject": 1_000_000, "buffer": 100_000, "overlay": 50_000, "scaling": 100_000,
         "small": 1_000, "buffer_1m": 1_000_000}
SECTIONS = {"io": cases.io_section, "reproject": cases.reproject_section, "buffer": cases.buffer_section,
            "overlay": cases.overlay_section, "scaling": scale_cases.scaling_section,
            "small": scale_cases.small_section, "buffer_1m": scale_cases.buffer_1m_section}
#: What runs without --only; buffer_1m (minutes, GBs) only on request.
DEFAULT_SECTIONS = ["io", "reproject", "buffer", "overlay", "scaling", "small"]
console = Console(width=None if sys.stdout.isatty() else 200)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10x smaller N (smoke test, a few minutes)")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated sections, default {','.join(DEFAULT_SECTIONS)}; also buffer_1m")
    p.add_argument("--buffer-1m", action="store_true",
                   help="add the 1M-polygon buffer (e2e success + every worker process's peak RSS; ~15 min)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per case, interleaved (median reported)")
    p.add_argument("--no-stages", action="store_true", help="skip the in-process breakdown of the worker's steps")
    p.add_argument("--small-connections", type=int, default=16,
                   help="HTTP connections the small section submits its tasks over (default 16)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/<date>[-quick].json)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.buffer_1m and "buffer_1m" not in args.only:
        args.only.append("buffer_1m")
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    return args


def log(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def versions() -> dict[str, str]:
    import geopandas
    import pyproj
    import shapely

    return {"python": platform.python_version(), "shapely": shapely.__version__,
            "geos (shapely)": shapely.geos_version_string, "pyproj": pyproj.__version__,
            "proj (pyproj)": pyproj.proj_version_str, "geopandas": geopandas.__version__}


def pg_settings(conn: Any) -> dict[str, str]:
    """Server settings that change what the PostGIS cases cost (WAL, durability, memory, parallelism)."""
    names = ("wal_level", "synchronous_commit", "fsync", "full_page_writes", "shared_buffers", "work_mem",
             "maintenance_work_mem", "max_parallel_workers_per_gather", "max_parallel_maintenance_workers",
             "max_wal_size")
    return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def make_context(stack: Stack, runs: int, stages: bool, small_connections: int = 16) -> cases.Ctx:
    from geoservice.config import Settings
    from geoservice.db.engine import make_engine, make_sessionmaker

    # The stage breakdown imports the worker's code, which reads its settings from the environment.
    os.environ.update({"GEOSERVICE_DATABASE_URL": stack.database_url, "GEOSERVICE_TASK_QUEUE": stack.queue})
    engine = make_engine(Settings(database_url=stack.database_url, task_queue=stack.queue), "cli")
    assert stack.user_id is not None
    return cases.Ctx(stack, make_sessionmaker(engine), engine, stack.user_id, runs, log, stages,
                     small_connections=small_connections)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Also SIGINT: a shell without job control starts background commands with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    started = datetime.now()
    stamp = started.strftime("%Y-%m-%dT%H%M%S") + ("-quick" if args.quick else "")
    out = args.out or HERE / "results" / f"{stamp}.json"
    scale = 10 if args.quick else 1
    stack = Stack(Path(f"/tmp/geoservice-bench-{stamp}"))
    meta: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"), "quick": args.quick, "runs": args.runs,
        "sizes": {s: SIZES[s] // scale for s in args.only}, "cpus": os.cpu_count(), "versions": versions(),
        "database": stack.db_name, "queue": stack.queue, "logs": str(stack.logdir), "loadavg": {},
        "seed": synth.SEED,
    }
    sections: list[cases.Section] = []
    errors: dict[str, str] = {}
    interrupted = False
    try:
        log(f"starting stack: database {stack.db_name}, queue {stack.queue}, API port {stack.port}, "
            f"logs {stack.logdir}")
        stack.start()
        with stack.pg() as conn:
            meta["versions"]["postgis"] = conn.execute("SELECT postgis_full_version()").fetchone()[0]
            meta["versions"]["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
            meta["schema"] = {
                "alembic": conn.execute("SELECT version_num FROM alembic_version").fetchone()[0],
                "spatial_data_partitioned": conn.execute(
                    "SELECT relkind = 'p' FROM pg_class WHERE relname = 'spatial_data'").fetchone()[0],
            }
            meta["pg_settings"] = pg_settings(conn)
            log(f"schema: {meta['schema']}")
        meta["worker"] = {"concurrency_flag": stack.concurrency, "concurrency": stack.worker_concurrency,
                          "postmaster_pid": stack.postmaster_pid()}
        log(f"worker: {meta['worker']}")
        ctx = make_context(stack, args.runs, not args.no_stages, args.small_connections)
        log("warm-up: small tasks of each type")
        cases.warm_up(ctx)
        for name in args.only:
            n = SIZES[name] // scale
            meta["loadavg"][f"{name} start"] = os.getloadavg()
            log(f"[bold]{name}[/] N={n:,}")
            try:
                sections.append(SECTIONS[name](ctx, n))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                console.print_exception(max_frames=8)
            finally:
                ctx.close_conns()
            meta["loadavg"][f"{name} end"] = os.getloadavg()
        ctx.engine.dispose()
        time.sleep(0.5)  # Celery logs "succeeded in" just after the task row is final
        for sec in sections:
            for run in sec.e2e_runs:
                run.worker_task_s = run.worker_task_s or stack.worker_task_seconds(run.task_id)
                run.deliveries = stack.deliveries(run.task_id)
    except KeyboardInterrupt:
        interrupted = True
        errors["interrupted"] = "interrupted (Ctrl-C or signal); partial results"
        console.print("[red]interrupted, cleaning up[/]")
    except Exception as exc:  # noqa: BLE001 - clean up, then report what we have
        errors["fatal"] = f"{type(exc).__name__}: {exc}"
        console.print_exception(max_frames=8)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        stack.close()
    meta["finished"] = datetime.now().isoformat(timespec="seconds")
    meta["targets"] = {"main ratio": cases.MAIN_RATIO,
                       "main ratio <=": {k: v[0] for k, v in cases.MAIN_TARGETS.items()},
                       "scaling speed-up >=": scale_cases.SCALING_TARGET[1],
                       "small tasks/s >=": scale_cases.SMALL_TARGET_PER_S[1],
                       "supermap ms <=": scale_cases.SUPERMAP_TARGETS_MS,
                       "buffer_1m worker RSS MB <=": scale_cases.RSS_TARGET_MB[0]}
    report.write_json(out, meta, sections, errors)
    report.print_all(console, sections)
    console.print("load average (1, 5, 15 min): " + "; ".join(
        f"{k} {v[0]:.1f}/{v[1]:.1f}/{v[2]:.1f}" for k, v in meta["loadavg"].items()), highlight=False)
    console.print(f"results: {out}   logs: {stack.logdir}   load average now: {os.getloadavg()}")
    if errors:
        console.print(f"[red]errors:[/] {errors}")
    return 130 if interrupted else (1 if errors else 0)


if __name__ == "__main__":
    sys.exit(main())
