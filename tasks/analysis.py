"""The Celery task: a thin shell that hands the task id to ``tasks.runner``."""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Task
from celery.worker.request import Request

from geoservice.config import get_settings
from geoservice.db.engine import make_engine, make_sessionmaker, transaction
from geoservice.db.repositories import tasks as repo
from geoservice.logging import get_logger
from geoservice.queue import RUN_ANALYSIS, RUN_CHUNK
from tasks.app import celery_app
from tasks.chunks import run_next_chunk
from tasks.runner import WorkerContext, execute

log = get_logger(__name__)
_context: tuple[int, WorkerContext] | None = None


def context() -> WorkerContext:
    """Per-process engine and session factory (created after fork, never shared across processes)."""
    global _context
    if _context is None or _context[0] != os.getpid():
        settings = get_settings()
        _context = (os.getpid(), WorkerContext(settings, make_sessionmaker(make_engine(settings, "worker"))))
    return _context[1]


class AnalysisRequest(Request):  # type: ignore[misc]
    """Marks the task failed when the hard time limit kills its pool process (runs in the main process)."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        try:
            with transaction(context().factory) as session:
                repo.fail(session, uuid.UUID(self.args[0]), f"exceeded the hard time limit of {timeout:.0f} s; the "
                          "worker process was stopped", "TimeLimitExceeded")
        except Exception:
            log.exception("could not record the hard time limit", task_id=self.id)


class AnalysisTask(Task):  # type: ignore[misc]
    Request = AnalysisRequest


@celery_app.task(name=RUN_ANALYSIS, base=AnalysisTask, bind=True, acks_late=True, reject_on_worker_lost=True,
                 ignore_result=True)
def run_analysis(self: Task, task_id: str, **_kwargs: Any) -> str:
    """Run analysis task ``task_id`` (extra kwargs tolerated for rolling deploys)."""
    outcome = execute(uuid.UUID(task_id), context())
    log.info("task delivery done", task_id=task_id, outcome=outcome, redelivered=bool(
        (self.request.delivery_info or {}).get("redelivered")))
    return outcome


@celery_app.task(name=RUN_CHUNK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_chunk(task_id: str | None = None, **_kwargs: Any) -> str:
    """Run the next chunk PostgreSQL picks (``task_id``: the task whose plan sent this wake-up, for logs)."""
    outcome = run_next_chunk(context())
    log.info("chunk delivery done", woken_by=task_id, outcome=outcome)
    return outcome
