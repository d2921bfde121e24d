"""Chunked execution (issue #11): a task's plan and its chunks, each with its own claim, lease and attempt.

A task over stored datasets larger than one chunk is split into chunks of features in spatial order; any
worker takes chunks (PostgreSQL picks which, fairly across users), writes each chunk's output into the
result's staging table in the same transaction that marks the chunk successful, and the last chunk to
finish (decided here, under the task row's lock) finalises the task. The database stays the source of truth.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geoservice.db.base import Base, CreatedAt, Timestamps, UUIDPk
from geoservice.db.models.task import TaskStatus

_STATUSES = ",".join(f"'{s.value}'" for s in TaskStatus)


class AnalysisPlan(CreatedAt, Base):
    """How a task is split: its strategy, its chunks' count and size, and where their output goes."""

    __tablename__ = "analysis_plans"

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("analysis_tasks.id", ondelete="CASCADE"),
                                               primary_key=True)
    # "map" (one output row per input row: buffer, reproject), "dissolve" (buffer with dissolve: partial
    # unions, reduced at the end), "overlay" (pieces, numbered at the end).
    strategy: Mapped[str] = mapped_column(String(20))
    # The result dataset's id, chosen at planning; its partition table is the staging table of "map" plans.
    result_dataset_id: Mapped[uuid.UUID]
    stage_table: Mapped[str] = mapped_column(Text)
    srid: Mapped[int] = mapped_column(Integer)
    crs: Mapped[str] = mapped_column(Text)
    # Output attribute schema when the plan knows it (map plans keep the input's fields).
    fields: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    chunks_total: Mapped[int] = mapped_column(Integer)
    features_total: Mapped[int] = mapped_column(BigInteger)
    vertices_total: Mapped[int] = mapped_column(BigInteger)
    # {"features": ..., "vertices": ..., "order": "hilbert"|"fid"}: the sizes it was cut with.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    finalised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once its staging table is dropped (a failed or dismissed task leaves no rows).
    cleaned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnalysisChunk(UUIDPk, Timestamps, Base):
    """One chunk of a task: which features, its state, and its share of the output's summary."""

    __tablename__ = "analysis_chunks"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status_valid"),
        Index("ix_analysis_chunks_task_seq", "task_id", "seq", unique=True),
        # What the fair scheduler scans: runnable chunks by owner.
        Index("ix_analysis_chunks_runnable", "owner_id", "created_at", "seq",
              postgresql_where=text("status IN ('accepted','running')")),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("analysis_tasks.id", ondelete="CASCADE"))
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    # "input": features of the input layer; "overlay": overlay features (their parts outside the input).
    side: Mapped[str] = mapped_column(String(20), server_default=text("'input'"))
    fids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    # [minx, miny, maxx, maxy] of its features, native CRS (what an overlay chunk reads the other layer by).
    bbox: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    feature_count: Mapped[int] = mapped_column(Integer)
    vertex_count: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), server_default=text("'accepted'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Its output: rows written, features dropped (empty results), and its share of the summary
    # (count, extent, geometry types, geodesic totals, fields seen, repairs) summed at finalisation.
    output_count: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
