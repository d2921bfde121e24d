"""The task queue port: the API and services enqueue by task name and id, never importing ``tasks/``.

Enqueue happens only after the transaction that inserted the task commits: services register the
id on the session (``enqueue_after_commit``), and the session owner sends it once committed. If the
process dies in between, the task stays ``accepted`` with ``enqueued_at`` NULL and the sweeper sends it.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from celery import Celery
from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db.repositories import tasks as tasks_repo
from geoservice.logging import get_logger

log = get_logger(__name__)

RUN_ANALYSIS = "geoservice.analysis.run"
#: Wakes a worker to run the next chunk PostgreSQL picks for it (argument: the task that made it, for logs).
RUN_CHUNK = "geoservice.analysis.chunk"
SWEEP = "geoservice.tasks.sweep"
_PENDING_KEY = "geoservice.enqueue_after_commit"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the API's producer and the workers."""
    return {
        "broker_url": settings.redis_url,
        # The analysis_tasks row is the source of truth: no result backend.
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": settings.task_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_hard_time_limit_s,
        # Redis re-delivers an unacknowledged task after this; it must exceed the hard time limit.
        # The key prefix keeps each queue's unacked-message bookkeeping and broadcasts (revoke) apart:
        # kombu restores *every* unacked message of a Redis database past its own visibility timeout,
        # so a deployment sharing the database with another (tests, a staging stack) could otherwise
        # have its in-flight tasks re-delivered early or its cancels cross over.
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "global_keyprefix": f"{settings.task_queue}:",
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_create_missing_queues": True,
    }


class TaskQueue(Protocol):
    def send(self, task_id: uuid.UUID) -> None: ...

    def wake_chunks(self, task_id: uuid.UUID, count: int) -> None: ...

    def revoke(self, task_id: uuid.UUID) -> None: ...

    def close(self) -> None: ...


class CeleryTaskQueue:
    """Send analysis tasks to the Celery workers through Redis, by task name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = Celery("geoservice-producer")
        self.app.conf.update(celery_config(settings))

    def send(self, task_id: uuid.UUID) -> None:
        # The Celery task id is the analysis task id, so a revoke can name it.
        self.app.send_task(RUN_ANALYSIS, args=[str(task_id)], task_id=str(task_id), queue=self.settings.task_queue)

    def wake_chunks(self, task_id: uuid.UUID, count: int) -> None:
        """Send ``count`` chunk wake-ups: each lets one worker take the next chunk the database picks."""
        for _ in range(count):
            self.app.send_task(RUN_CHUNK, args=[str(task_id)], queue=self.settings.task_queue)

    def revoke(self, task_id: uuid.UUID) -> None:
        """Stop a running attempt at once: the pool process running it is terminated."""
        self.app.control.revoke(str(task_id), terminate=True, signal="SIGTERM")

    def close(self) -> None:
        self.app.close()


def enqueue_after_commit(session: Session, task_id: uuid.UUID) -> None:
    """Register ``task_id`` to be sent once ``session``'s transaction has committed."""
    session.info.setdefault(_PENDING_KEY, []).append(("send", task_id))


def revoke_after_commit(session: Session, task_id: uuid.UUID) -> None:
    """Register a running task to be stopped once its dismissal has committed."""
    session.info.setdefault(_PENDING_KEY, []).append(("revoke", task_id))


def send_after_commit(session: Session, queue: TaskQueue) -> None:
    """Carry out what the committed session registered: sends and revokes.

    A task is inserted with ``enqueued_at`` already stamped (one round trip less per submission); when its
    send fails the stamp is cleared, so the record stays true and the sweeper sends it after the grace period.
    """
    pending: list[tuple[str, uuid.UUID]] = session.info.pop(_PENDING_KEY, [])
    for action, task_id in pending:
        try:
            if action == "revoke":
                queue.revoke(task_id)
            else:
                queue.send(task_id)
        except Exception:  # a lost send is re-sent by the sweeper; a lost revoke is caught by the lease check
            log.exception("queue operation failed", action=action, task_id=str(task_id))
            if action == "send":
                _not_sent(session, task_id)


def _not_sent(session: Session, task_id: uuid.UUID) -> None:
    """Record that the task did not reach the broker (own short transaction)."""
    try:
        tasks_repo.clear_enqueued(session, task_id)
        session.commit()
    except Exception:
        session.rollback()
        log.exception("could not clear enqueued_at", task_id=str(task_id))
