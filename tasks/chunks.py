"""Run one chunk: claim the chunk PostgreSQL picks (fairly across users) -> load -> compute -> store.

A wake-up message does not name a chunk: whichever worker gets it takes the next runnable chunk of any task
in its queue. The worker that stores a task's last chunk finalises the task at once (``runner.execute``).
"""

from __future__ import annotations

import os
import time
import uuid

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from geoservice.db.engine import transaction
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import tasks as tasks_repo
from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger
from geoservice.services import analyses
from geoservice.services.analyses import chunked
from geoservice.services.auth import principal_for_user
from tasks.progress import ChunkReporter, LeaseKeeper, TaskCancelled
from tasks.runner import HOST, WorkerContext, _pid_alive, execute

log = get_logger(__name__)


def run_next_chunk(ctx: WorkerContext) -> str:
    """Claim and run the next chunk; return what happened (``idle`` when there was none to run)."""
    owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    with transaction(ctx.factory) as session:
        claim = chunks_repo.claim_next(session, ctx.settings.task_queue, owner, ctx.settings.task_lease_s,
                                       _dead_owners(session))
    if claim is None:
        return "idle"
    if claim.attempt > claim.max_attempts:
        _fail(ctx.factory, claim, f"gave up after {claim.max_attempts} attempts: the worker running it was lost "
              "each time", "MaxAttemptsExceeded")
        return "failed"
    reporter = ChunkReporter(claim.chunk_id)
    keeper = LeaseKeeper(ctx.factory, reporter, ctx.settings.task_lease_s,
                         renew=lambda s: chunks_repo.renew(s, claim.chunk_id, owner, ctx.settings.task_lease_s))
    keeper.start()
    try:
        done = _run(ctx, claim, reporter)
    except TaskCancelled:
        log.info("chunk stopped: dismissed or taken over", task_id=str(claim.task_id), chunk=claim.seq)
        return "dismissed"
    except SoftTimeLimitExceeded:
        _fail(ctx.factory, claim, f"exceeded the time limit of {ctx.settings.task_soft_time_limit_s} s",
              "TimeLimitExceeded")
        return "failed"
    except GeoserviceError as exc:
        _fail(ctx.factory, claim, exc.detail, exc.code)
        return "failed"
    except Exception:
        log.exception("chunk crashed", task_id=str(claim.task_id), chunk=claim.seq)
        _fail(ctx.factory, claim, "internal error while running the analysis; see the worker log", "InternalError")
        return "failed"
    finally:
        keeper.stop()
    if done is not None and done[0] >= done[1]:  # the last chunk: publish the result now
        return f"finalised:{execute(claim.task_id, ctx)}"
    return "successful"


def _run(ctx: WorkerContext, claim: chunks_repo.ChunkClaim, reporter: ChunkReporter) -> tuple[int, int] | None:
    started = time.perf_counter()
    with transaction(ctx.factory) as session:
        principal = principal_for_user(session, claim.created_by, via="internal")
        prepared = analyses.prepare(session, principal, claim.analysis_type, claim.parameters,
                                    plugins=ctx.settings.analysis_plugins, check_output_name=False)
        loaded = chunked.load(session, claim, prepared)
    loaded_at = time.perf_counter()
    output = chunked.compute(claim, prepared, loaded, reporter.computing)
    reporter.computing(1.0)
    computed_at = time.perf_counter()
    with transaction(ctx.factory) as session:
        done = chunked.store(session, claim, loaded, output)
        if done is None:
            raise TaskCancelled("chunk lease lost before storing")
    log.info("chunk stored", task_id=str(claim.task_id), chunk=claim.seq, features=claim.feature_count,
             load_s=round(loaded_at - started, 3), compute_s=round(computed_at - loaded_at, 3),
             store_s=round(time.perf_counter() - computed_at, 3))
    return done


def _dead_owners(session: Session) -> list[str]:
    """Lease owners of running chunks whose process on this host is gone (take their chunks over now)."""
    dead = []
    for owner in chunks_repo.running_owners(session, HOST):
        parts = owner.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            dead.append(owner)
    return dead


def _fail(factory: sessionmaker[Session], claim: chunks_repo.ChunkClaim, message: str, code: str) -> None:
    """Fail the chunk and its task, naming the chunk; the task's other chunks stop."""
    where = describe(claim.seq, claim.plan.chunks_total, claim.fids)
    with transaction(factory) as session:
        chunks_repo.fail(session, claim.chunk_id, message, code)
        if tasks_repo.fail(session, claim.task_id, f"{where}: {message}", code):
            chunks_repo.dismiss_for_task(session, claim.task_id)


def describe(seq: int, total: int, fids: list[int]) -> str:
    """How a failure names its chunk: its number and the features it holds."""
    span = f"feature {fids[0]}" if len(fids) == 1 else f"features {fids[0]}-{fids[-1]}" if fids else "no features"
    return f"chunk {seq + 1} of {total} ({span})"
