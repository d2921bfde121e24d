"""Worker-side housekeeping thread: heartbeats for /readyz, and the sweeper that re-sends lost tasks.

Runs in each worker's main process; a PostgreSQL advisory lock lets one sweeper act at a time.
The sweeper sends (1) accepted tasks that never reached the broker (the API died between commit and
send, or Redis was down) and (2) running tasks whose lease expired (their worker is gone), and fails
tasks that used up their attempts.
"""

from __future__ import annotations

import socket
import threading
import uuid

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from geoservice import heartbeat
from geoservice.config import Settings
from geoservice.db import chunk_io, gis_io
from geoservice.db.engine import make_engine, make_sessionmaker, transaction
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import tasks as repo
from geoservice.logging import get_logger
from geoservice.queue import CeleryTaskQueue, TaskQueue

log = get_logger(__name__)


def sweep_once(factory: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> int:
    """Re-send lost tasks once; return how many were sent."""
    with transaction(factory) as session:
        lock = session.execute(text("SELECT pg_try_advisory_xact_lock(hashtext('geoservice.sweeper:' || :q))"),
                               {"q": settings.task_queue}).scalar()
        if not lock:
            return 0
        exhausted = repo.fail_exhausted(session, settings.task_queue)
        if exhausted:
            log.warning("tasks failed after their last attempt", count=exhausted)
        candidates = repo.sweep_candidates(session, settings.task_queue, settings.sweeper_accepted_grace_s)
        for task_id, status in candidates:
            queue.send(task_id)
            repo.mark_enqueued(session, [task_id])
            log.info("sweeper re-sent task", task_id=str(task_id), status=status)
        lost = _sweep_chunks(session, settings)
    if lost:  # after the commit: until then the stamped chunks are locked, and woken workers would skip them
        queue.wake_chunks(uuid.UUID(int=0), min(lost, 1000))
        log.info("sweeper woke workers for chunks", count=lost)
    _drop_stale_stages(factory)
    return len(candidates)


def _sweep_chunks(session: Session, settings: Settings) -> int:
    """Fail tasks whose chunk used up its attempts (naming it); return how many chunks nobody took."""
    for chunk_id, task_id, seq, total, attempts in chunks_repo.exhausted(session, settings.task_queue):
        message = f"gave up after {attempts} attempts: the worker running it was lost each time"
        chunks_repo.fail(session, chunk_id, message, "MaxAttemptsExceeded")
        if repo.fail(session, task_id, f"chunk {seq + 1} of {total}: {message}", "MaxAttemptsExceeded"):
            chunks_repo.dismiss_for_task(session, task_id)
        log.warning("task failed: a chunk used up its attempts", task_id=str(task_id), chunk=seq)
    return chunks_repo.sweep(session, settings.task_queue, settings.sweeper_accepted_grace_s)


def _drop_stale_stages(factory: sessionmaker[Session]) -> None:
    """Drop the staging tables of failed and dismissed chunked tasks: they leave no rows behind."""
    with transaction(factory) as session:
        for task_id, table, dataset_id in chunks_repo.stale_stages(session):
            chunk_io.drop_stage(session, table)
            chunk_io.drop_stage(session, gis_io.partition_name(dataset_id))
            chunks_repo.mark_cleaned(session, task_id)
            log.info("dropped the staging table of an unfinished task", task_id=str(task_id))


class Housekeeper(threading.Thread):
    def __init__(self, settings: Settings, worker_name: str) -> None:
        super().__init__(name="geoservice-housekeeper", daemon=True)
        self.settings = settings
        self.worker_name = worker_name or socket.gethostname()
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = self.settings
        engine = make_engine(settings, "worker")
        factory = make_sessionmaker(engine)
        queue = CeleryTaskQueue(settings)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        ticks = 0
        period = 5.0
        while not self.stopped.is_set():
            try:
                heartbeat.beat(client, settings.task_queue, self.worker_name)
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
            if ticks % max(int(settings.sweeper_interval_s / period), 1) == 0:
                try:
                    sweep_once(factory, queue, settings)
                except Exception:
                    log.warning("sweep failed", exc_info=True)
            ticks += 1
            self.stopped.wait(period)
        queue.close()
        engine.dispose()

    def stop(self) -> None:
        self.stopped.set()
