"""Shared API schemas."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")
#: Largest list offset accepted (a larger one is a 422, not a database error).
MAX_OFFSET = 2**31 - 1


class Page(BaseModel, Generic[T]):  # noqa: UP046 (pydantic generic model, Python 3.11)
    data: list[T]
    count: int
    limit: int
    offset: int
    links: dict[str, str] = {}


class ErrorBody(BaseModel):
    error: str
    detail: str
    field: str | None = None
    feature: int | str | None = None
