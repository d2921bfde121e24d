"""Agent schemas: tools, sessions, invocations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AgentToolRead(BaseModel):
    name: str
    title: str
    description: str
    kind: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    permissions: list[str]
    is_active: bool
    rate_limit_qps: int = Field(description="calls per second per user (burst: as many); 0 means unlimited")


class AgentSessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=255)
    mode: Literal["rest", "mcp-stdio", "mcp-http"] = "rest"


class AgentSessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    mode: str
    status: str
    last_message_at: datetime
    created_at: datetime
    updated_at: datetime
    links: dict[str, str] = {}


class InvocationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    session_id: uuid.UUID
    tool: str
    args: Any
    status: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    latency_ms: int | None
    wrote_memory: bool
    task_id: uuid.UUID | None
    idempotency_key: str | None
    created_at: datetime
    finished_at: datetime | None


class InvocationResult(BaseModel):
    """The answer to a tool call: ``result`` (status ``succeeded``) or a ``task`` handle (``submitted``)."""

    invocation_id: uuid.UUID
    tool: str
    status: str
    replayed: bool = Field(description="an Idempotency-Key retry: the first call's answer, nothing ran again")
    replay_of: uuid.UUID | None = None
    latency_ms: int
    result: dict[str, Any] | None
    task: dict[str, Any] | None
