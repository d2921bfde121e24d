"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, require_workers: bool = False) -> JSONResponse:
    """Report whether the database (with PostGIS), Redis and the workers are reachable.

    Workers are always reported; they count towards readiness only with ``require_workers=true``
    (an API without workers still accepts tasks: they wait in the queue).
    """
    checks: dict[str, Any] = {}
    try:
        with request.state.engine.connect() as conn:
            checks["database"] = {"ok": True, "postgis": conn.execute(text("SELECT postgis_lib_version()")).scalar()}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        request.state.redis.ping()
        checks["redis"] = {"ok": True}
    except Exception as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    checks["workers"] = _workers(request)
    counted = [k for k in checks if k != "workers" or require_workers]
    ready = all(checks[k]["ok"] for k in counted)
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                          status_code=200 if ready else 503)


def _workers(request: Request) -> dict[str, Any]:
    from geoservice.heartbeat import alive_workers

    try:
        workers = alive_workers(request.state.redis, request.state.settings.task_queue)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": bool(workers), "alive": workers}


@router.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
