"""Task schemas. ``TaskCreate`` is generated from the operation registry in force (plugins included): a union
discriminated by ``analysis_type`` whose ``parameters`` are that operation's wire model, so the OpenAPI
document describes every operation's parameters. The route reads the envelope (``TaskEnvelope``) and
``services.analyses.prepare`` validates ``parameters`` with the same model, naming the field that is wrong.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from geoservice.analysis import Registry
from geoservice.analysis.request import parameters_model

TASK_CREATE_SCHEMA = "#/components/schemas/TaskCreate"


class TaskEnvelope(BaseModel):
    """A task submission; ``parameters`` are checked by the operation's own model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    analysis_type: str = Field(description="the operation: buffer, overlay, reproject or a configured plugin")
    parameters: dict[str, Any]


async def task_body(request: Request) -> TaskEnvelope:
    """The ``POST /tasks`` body as a ``TaskEnvelope`` (422 naming the field, as FastAPI's own validation)."""
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": exc.msg}}]) from None
    if data is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return TaskEnvelope.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                                     ) from None


def task_create_schemas(operations: Registry, ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """OpenAPI component schemas: ``TaskCreate`` (one variant per operation) and every model it uses."""
    variants = []
    for op in operations.values():
        suffix = "".join(part.capitalize() for part in op.name.split("_"))
        variants.append(create_model(  # type: ignore[call-overload]
            f"TaskCreate{suffix}", __config__=ConfigDict(extra="forbid"),
            __doc__=f"Submit a {op.name} analysis: {op.title}.",
            name=(str, Field(min_length=1, max_length=255)), description=(str | None, None),
            analysis_type=(Literal[op.name], ...), parameters=(parameters_model(op), ...)))
    union = Annotated[Union[tuple(variants)], Field(discriminator="analysis_type")]  # noqa: UP007 - built at run time
    schema = TypeAdapter(union).json_schema(ref_template=ref_template, mode="validation")
    defs = schema.pop("$defs", {})
    return {**defs, "TaskCreate": {"title": "TaskCreate", **schema}}


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
    chunks_total: int | None = Field(default=None, description="chunks the task runs in (None: one piece)")
    chunks_done: int = 0
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
