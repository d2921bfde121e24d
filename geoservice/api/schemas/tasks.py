"""Task schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    analysis_type: str = Field(description="reproject (buffer and overlay follow)")
    parameters: dict[str, Any]


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    analysis_type: str
    parameters: dict[str, Any]
    status: str
    progress: Decimal
    phase: str | None
    attempts: int
    created_by: uuid.UUID
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    error_code: str | None
    result_dataset_id: uuid.UUID | None
    supermap_request: dict[str, Any] | None
    supermap_result: dict[str, Any] | list[Any] | None  # batch overlay and coordtransfer results are arrays
    links: dict[str, str] = {}


class ResultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    result_type: str
    data: dict[str, Any]
    result_metadata: dict[str, Any]
    dataset_id: uuid.UUID | None
    created_at: datetime
    links: dict[str, str] = {}


class TaskResults(BaseModel):
    task: TaskRead
    results: list[ResultRead]
