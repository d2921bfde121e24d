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
    owner_id: uuid.UUID
    is_public: bool
    created_at: datetime
    updated_at: datetime
    links: dict[str, str] = {}


class DatasetCreated(DatasetRead):
    repaired: list[dict[str, Any]] = Field(default=[], description="features repaired by make_valid")
    warnings: list[str] = []


class DatasetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = None
    is_public: bool | None = Field(default=None, description="readable (never writable) by every user")


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str


class ShareRead(BaseModel):
    user_id: uuid.UUID
    username: str
