"""Run one analysis task: claim -> load -> compute -> store, with the row as the source of truth.

Kept out of the Celery task body so the body fits on a screen and this logic reads top to bottom.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from geoservice.config import Settings
from geoservice.db.engine import transaction
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import tasks as repo
from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger
from geoservice.queue import CeleryTaskQueue, TaskQueue
from geoservice.services import analyses
from geoservice.services.analyses import chunked
from geoservice.services.auth import principal_for_user
from tasks.progress import LeaseKeeper, ProgressReporter, TaskCancelled

log = get_logger(__name__)
HOST = socket.gethostname()


@dataclass
class WorkerContext:
    settings: Settings
    factory: sessionmaker[Session]
    queue: TaskQueue | None = None  # a producer, to wake workers for chunks (made on first use)

    def producer(self) -> TaskQueue:
        if self.queue is None:
            self.queue = CeleryTaskQueue(self.settings)
        return self.queue


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
            repo.fail(session, task_id, f"gave up after {claim.max_attempts} attempts: the worker running it was "
                      "lost each time", "MaxAttemptsExceeded", owner=owner)
        return "failed"
    reporter = ProgressReporter(factory, task_id, owner, settings.progress_interval_s)
    keeper = LeaseKeeper(factory, reporter, settings.task_lease_s)
    keeper.start()
    try:
        return _run(claim, reporter, ctx)
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
        repo.fail(session, claim.task_id, message, code, owner=claim.owner)


def _run(claim: repo.Claim, reporter: ProgressReporter, ctx: WorkerContext) -> str:
    """Finalise a chunked task, or plan one (its chunks then run anywhere), or run it as one piece."""
    reporter.phase("loading")
    with transaction(ctx.factory) as session:
        principal = principal_for_user(session, claim.created_by, via="internal")
        prepared = analyses.prepare(session, principal, claim.analysis_type, claim.parameters,
                                    plugins=ctx.settings.analysis_plugins, check_output_name=False)
        if chunks_repo.get_plan(session, claim.task_id) is not None:  # its chunks are all done
            if not chunked.finalise(session, claim, prepared):
                raise TaskCancelled("lease lost before finalising")
            return "successful"
        chunks = chunked.plan(session, ctx.settings, claim, prepared)
        if chunks is None:  # one piece: load it in the same transaction
            layers = analyses.load_layers(session, prepared, field_prefix="parameters.")
    if chunks is not None:
        wake_chunks(ctx, claim.task_id, chunks)
        log.info("task planned in chunks", task_id=str(claim.task_id), chunks=chunks)
        return "planned"
    reporter.phase("computing")
    output = analyses.compute(prepared.request, layers, reporter.computing)
    reporter.phase("storing")
    with transaction(ctx.factory) as session:
        if not analyses.store_task_result(session, claim, prepared, output):
            raise TaskCancelled("lease lost before storing")
    return "successful"


def wake_chunks(ctx: WorkerContext, task_id: uuid.UUID, count: int) -> None:
    """Wake a worker per chunk (a lost wake-up is re-sent by the sweeper)."""
    try:
        ctx.producer().wake_chunks(task_id, count)
    except Exception:
        log.exception("could not wake workers for the chunks", task_id=str(task_id))
