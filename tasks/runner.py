"""Run one analysis task: claim -> load -> compute -> store, with the row as the source of truth.

Kept out of the Celery task body so the body fits on a screen and this logic reads top to bottom.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from geopandas import GeoDataFrame
from sqlalchemy.orm import Session, sessionmaker

from geoservice.analysis.base import AnalysisOutput
from geoservice.analysis.registry import Operation
from geoservice.config import Settings
from geoservice.db.engine import transaction
from geoservice.db.models import Dataset
from geoservice.db.repositories import tasks as repo
from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger
from geoservice.services import datasets as dataset_service
from geoservice.services import inputs
from geoservice.services.auth import principal_for_user
from geoservice.services.operations import operations
from geoservice.supermap.payloads import dataset_result
from tasks.progress import LeaseKeeper, ProgressReporter, TaskCancelled

log = get_logger(__name__)
HOST = socket.gethostname()


@dataclass
class WorkerContext:
    settings: Settings
    factory: sessionmaker[Session]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_owners(owner: str | None) -> list[str]:
    """Return ``[owner]`` when that lease holder was a process on this host that no longer runs.

    A pool child killed mid-task is redelivered at once (``reject_on_worker_lost``); its lease has
    not expired yet, but its process is gone, so the new delivery may take the task over now.
    """
    if not owner:
        return []
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
        return []
    pid = int(parts[1])
    return [owner] if pid == os.getpid() or not _pid_alive(pid) else []


def execute(task_id: uuid.UUID, ctx: WorkerContext) -> str:
    """Run the task if this delivery can claim it; return what happened."""
    settings, factory = ctx.settings, ctx.factory
    owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    with transaction(factory) as session:
        dead = dead_local_owners(repo.current_lease_owner(session, task_id))
        claim = repo.claim(session, task_id, owner, settings.task_lease_s, dead)
    if claim is None:
        log.info("delivery skipped: task is finished, dismissed or held by a live attempt", task_id=str(task_id))
        return "skipped"
    if claim.attempt > claim.max_attempts:
        with transaction(factory) as session:
            repo.fail_if_holding(session, task_id, owner, f"gave up after {claim.max_attempts} attempts: the worker "
                                 "running it was lost each time", "MaxAttemptsExceeded")
        return "failed"
    reporter = ProgressReporter(factory, task_id, owner, settings.progress_interval_s)
    keeper = LeaseKeeper(factory, reporter, settings.task_lease_s)
    keeper.start()
    try:
        _run(claim, reporter, ctx)
        return "successful"
    except TaskCancelled:
        log.info("task stopped: dismissed or taken over", task_id=str(task_id))
        return "dismissed"
    except SoftTimeLimitExceeded:
        _fail(factory, claim, f"exceeded the time limit of {settings.task_soft_time_limit_s} s", "TimeLimitExceeded")
        return "failed"
    except GeoserviceError as exc:
        _fail(factory, claim, exc.detail, exc.code)
        return "failed"
    except Exception:
        log.exception("analysis crashed", task_id=str(task_id))
        _fail(factory, claim, "internal error while running the analysis; see the worker log", "InternalError")
        return "failed"
    finally:
        keeper.stop()


def _fail(factory: sessionmaker[Session], claim: repo.Claim, message: str, code: str) -> None:
    with transaction(factory) as session:
        repo.fail_if_holding(session, claim.task_id, claim.owner, message, code)


def _run(claim: repo.Claim, reporter: ProgressReporter, ctx: WorkerContext) -> None:
    op = operations(ctx.settings.analysis_plugins)[claim.analysis_type]
    params = op.params_model.model_validate(claim.parameters)
    reporter.phase("loading")
    layers, sources = _load_inputs(ctx.factory, op, params, claim.created_by)
    reporter.phase("computing")
    output = op.run(layers, params, reporter.computing)
    reporter.phase("storing")
    _store(ctx.factory, claim, params, output, sources)


def _load_inputs(factory: sessionmaker[Session], op: Operation, params: Any,
                 owner_id: uuid.UUID) -> tuple[Mapping[str, GeoDataFrame], dict[str, Dataset]]:
    with transaction(factory) as session:
        principal = principal_for_user(session, owner_id, via="internal")
        return inputs.load_inputs(session, principal, op, params, field_prefix="parameters.")


def _store(factory: sessionmaker[Session], claim: repo.Claim, params: Any, output: AnalysisOutput,
           sources: dict[str, Dataset]) -> None:
    """Store the output dataset, the result row and the final status in one transaction, if still ours."""
    with transaction(factory) as session:
        task = repo.lock_if_holding(session, claim.task_id, claim.owner)
        if task is None:
            raise TaskCancelled("lease lost before storing")
        base = sources["input"].name if "input" in sources else "inline"
        name = getattr(params, "output_name", None) or f"{base}_{claim.analysis_type}_{str(claim.task_id)[:8]}"
        stored = dataset_service.store_layer(session, claim.created_by, name, output.gdf, analysis_output=True,
                                             source={"task_id": str(claim.task_id),
                                                     "analysis_type": claim.analysis_type})
        dataset = stored.dataset
        data = {"dataset_id": str(dataset.id), "dataset_name": dataset.name, "feature_count": dataset.feature_count,
                "extent": dataset.extent, "extent_crs84": dataset.extent_crs84, "crs": dataset.crs,
                "geometry_type": dataset.geometry_type}
        for key in ("geodesic_area_m2", "geodesic_length_m"):
            if key in output.metadata:
                data[key] = output.metadata[key]
        metadata = {**output.metadata, "repaired_features": len(stored.repaired), "attempt": claim.attempt}
        repo.add_result(session, task_id=task.id, result_type="dataset", data=data, result_metadata=metadata,
                        dataset_id=dataset.id)
        task.result_dataset_id = dataset.id
        task.supermap_result = dataset_result(dataset.name, str(task.id))
        repo.finish(session, task, "successful")
