"""Dataset schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    srid: int
    crs: str
    geometry_type: str
    feature_count: int
    extent: list[float] | None = Field(description="[minx, miny, maxx, maxy] in the dataset's native CRS")
    extent_crs84: list[float] | None = Field(description="[west, south, east, north] in CRS84")
    fields: list[dict[str, Any]]
    source: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    links: dict[str, str] = {}


class DatasetCreated(DatasetRead):
    repaired: list[dict[str, Any]] = Field(default=[], description="features repaired by make_valid")
    warnings: list[str] = []
