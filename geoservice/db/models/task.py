"""Analysis tasks and their results. The ``analysis_tasks`` row is the source of truth for a task."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geoservice.db.base import Base, CreatedAt, Timestamps, UUIDPk


class TaskStatus(StrEnum):
    """OGC API Processes job status vocabulary."""

    accepted = "accepted"
    running = "running"
    successful = "successful"
    failed = "failed"
    dismissed = "dismissed"


#: A task in a final status never changes again; the others are still to run or running.
FINAL_STATUSES = frozenset({TaskStatus.successful, TaskStatus.failed, TaskStatus.dismissed})
ACTIVE_STATUSES = frozenset(TaskStatus) - FINAL_STATUSES


class AnalysisTask(UUIDPk, Timestamps, Base):
    __tablename__ = "analysis_tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(",".join(f"'{s.value}'" for s in TaskStatus)), name="status_valid"
        ),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        Index(
            "ix_analysis_tasks_sweep",
            "status",
            "lease_expires_at",
            postgresql_where=text("status IN ('accepted','running')"),
        ),
    )

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    analysis_type: Mapped[str] = mapped_column(String(50), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default=text("'accepted'"), index=True)
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress: Mapped[Decimal] = mapped_column(Numeric(5, 2), server_default=text("0"))
    supermap_request: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    supermap_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_message: Mapped[str | None] = mapped_column(Text)

    # --- task engine (issue #3) ---------------------------------------------------------
    phase: Mapped[str | None] = mapped_column(String(50))
    error_code: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    # Who holds the task now ("hostname:pid:attempt") and until when; renewed while it runs.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the task was last handed to the broker: stamped at insert and cleared if the send after commit
    # fails (NULL: not sent). An API that dies between commit and send leaves the stamp; either way the
    # sweeper re-sends an accepted task once this (or created_at) is older than the grace period.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The broker queue the task is sent to; the sweeper re-sends only its own queue's tasks.
    queue: Mapped[str] = mapped_column(String(100), server_default=text("'geoservice'"))
    result_dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL")
    )
    # --- chunked execution (issue #11): None for a task run as one piece ---------------------------------
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class AnalysisResult(UUIDPk, CreatedAt, Base):
    __tablename__ = "analysis_results"

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("analysis_tasks.id", ondelete="CASCADE"), index=True)
    result_type: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result_metadata: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
