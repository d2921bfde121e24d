"""Throttled progress writes to the task row, plus the lease keeper thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from geoservice.db.engine import transaction
from geoservice.db.repositories import tasks as repo
from geoservice.logging import get_logger

log = get_logger(__name__)

#: Overall progress span of each phase; an analysis reports fractions within "computing".
PHASES: dict[str, tuple[float, float]] = {
    "loading": (0.0, 10.0),
    "computing": (10.0, 85.0),
    "storing": (85.0, 99.0),
}


class TaskCancelled(Exception):
    """The task was dismissed, or its lease was taken by another attempt: stop without storing."""


class ProgressReporter:
    """Write ``progress``/``phase`` at most every ``interval`` s, and always when the phase changes, once the
    task has run for ``interval`` s: a task that finishes sooner writes no progress at all (its claim and its
    result are its only writes, which is what lets small tasks go fast).

    A failed write is logged and never fails the task. When the lease keeper reports the lease lost
    (cancelled, or taken over), the next report raises ``TaskCancelled``.
    """

    def __init__(self, factory: sessionmaker[Session], task_id: uuid.UUID, owner: str, interval: float) -> None:
        self.factory = factory
        self.task_id = task_id
        self.owner = owner
        self.interval = interval
        self.lost = threading.Event()
        self._started = time.monotonic()
        self._last_write = 0.0
        self._last_phase: str | None = None

    def phase(self, name: str, fraction: float = 0.0) -> None:
        """Report progress ``fraction`` (0-1) within phase ``name``."""
        if self.lost.is_set():
            raise TaskCancelled("the task was dismissed or taken over by another attempt")
        lo, hi = PHASES.get(name, (0.0, 99.0))
        now = time.monotonic()
        if now - self._started < self.interval:
            return
        if name == self._last_phase and now - self._last_write < self.interval:
            return
        self._last_phase, self._last_write = name, now
        try:
            with transaction(self.factory) as session:
                if not repo.write_progress(session, self.task_id, self.owner, lo + (hi - lo) * fraction, name):
                    self.lost.set()
        except Exception:
            log.warning("progress write failed", task_id=str(self.task_id), exc_info=True)

    def computing(self, fraction: float, _message: str = "computing") -> None:
        """The analysis progress callback (``ProgressFn``)."""
        self.phase("computing", fraction)


class ChunkReporter:
    """The progress callback of a chunk: progress is counted by chunks (``chunks_done``), so nothing is
    written here; it only stops the chunk once its lease is lost (the task was dismissed, or taken over)."""

    def __init__(self, chunk_id: uuid.UUID) -> None:
        self.task_id = chunk_id
        self.lost = threading.Event()

    def computing(self, _fraction: float, _message: str = "computing") -> None:
        if self.lost.is_set():
            raise TaskCancelled("the chunk was dismissed or taken over by another attempt")


class LeaseKeeper(threading.Thread):
    """Renew a lease every lease/3 s while its work runs; flag the reporter when the lease is lost.

    ``renew`` renews it in a session (default: the reporter's task lease)."""

    def __init__(self, factory: sessionmaker[Session], reporter: ProgressReporter | ChunkReporter, lease_s: int,
                 renew: Callable[[Session], bool] | None = None) -> None:
        super().__init__(name=f"lease-{reporter.task_id}", daemon=True)
        self.factory = factory
        self.reporter = reporter
        self.lease_s = lease_s
        self.renew = renew or (lambda s: repo.renew_lease(s, reporter.task_id, reporter.owner,  # type: ignore[union-attr]
                                                          lease_s))
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(max(self.lease_s / 3, 0.5)):
            try:
                with transaction(self.factory) as session:
                    held = self.renew(session)
            except Exception:
                log.warning("lease renewal failed", task_id=str(self.reporter.task_id), exc_info=True)
                continue
            if not held:
                self.reporter.lost.set()
                return

    def stop(self) -> None:
        self.stopped.set()
