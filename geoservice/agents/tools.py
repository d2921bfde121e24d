"""The tool registry: every agent tool with its agent-facing JSON schema, built from a params model.

Analysis tools are the operations of the analysis registry in force (buffer, overlay, reproject and any
configured plugin), with the operation's own params model, so one model validates a task for the worker,
``POST /api/v1/tasks`` and an agent. The agent-facing schema is that model's JSON schema with references
inlined; it never accepts the flat ``"distance": 500, "unit": "m"`` form the REST API tolerates, so every
distance carries its unit (``distances_require_units`` checks it). Read tools have their own models here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from geoservice.analysis.params import StrictModel
from geoservice.analysis.request import parameters_model
from geoservice.services.operations import operations

ToolKind = Literal["analysis", "read"]
ANALYSIS_ROLES = ("admin", "analyst", "agent")
READ_ROLES = ("admin", "analyst", "agent", "viewer")
DEFAULT_QPS: dict[str, int] = {"analysis": 5, "read": 20}


class ListDatasetsArgs(StrictModel):
    """Arguments of ``list_datasets``."""

    name_contains: str | None = Field(default=None, max_length=255, description="case-insensitive part of the name")
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)


class DatasetArgs(StrictModel):
    """Arguments of ``describe_dataset``."""

    dataset_id: UUID


class AttributeFilter(StrictModel):
    """One attribute condition; ``~`` is a case-insensitive substring match."""

    field: str = Field(min_length=1)
    op: Literal["=", "!=", "<", "<=", ">", ">=", "~"] = "="
    value: str | int | float | bool


class QueryFeaturesArgs(StrictModel):
    """Arguments of ``query_features``."""

    dataset_id: UUID
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4,
                                     description="[minx, miny, maxx, maxy] in bbox_crs (default lon/lat)")
    bbox_crs: str = Field(default="OGC:CRS84", description="CRS of bbox, e.g. 'EPSG:3857'")
    filters: list[AttributeFilter] = Field(default_factory=list, description="attribute conditions (AND)")
    properties: list[str] | None = Field(default=None, description="attributes to return (default: all)")
    limit: int = Field(default=50, ge=1, le=500)


class TaskArgs(StrictModel):
    """Arguments of ``task_status`` and ``task_result``."""

    task_id: UUID


_READ_TOOLS: dict[str, tuple[type[BaseModel], str, str]] = {
    "list_datasets": (ListDatasetsArgs, "List datasets",
                      "List the datasets you can read (yours, shared with you, public): id, name, feature count, "
                      "geometry type, CRS, lon/lat extent and attribute fields."),
    "describe_dataset": (DatasetArgs, "Describe a dataset",
                         "Describe one dataset: CRS, geometry type, feature count, extents, attribute fields."),
    "query_features": (QueryFeaturesArgs, "Query features",
                       "Features of a dataset as GeoJSON (lon/lat), selected by a bbox and/or attribute filters. "
                       "Large answers come back as a summary with a link to the full result."),
    "task_status": (TaskArgs, "Task status",
                    "Status (accepted, running, successful, failed, dismissed), progress 0-100 and error of a task."),
    "task_result": (TaskArgs, "Task result",
                    "The result of a successful task: the output layer, or a summary (feature count, extent, "
                    "geodesic area/length, simplified preview) with a handle to the full dataset."),
}

_ANALYSIS_HINTS: dict[str, str] = {
    "buffer": "Buffer features by a distance that always carries a unit: {\"value\": 500, \"unit\": \"m\"} "
              "(m, km, mi, ft, nmi, degrees); a bare number is refused. Lon/lat data is buffered per feature in "
              "its local projection, so distances are true ground distances at any latitude.",
    "overlay": "Overlay an input layer with polygons: intersect, clip, erase, identity, union, update or xor.",
    "reproject": "Reproject a layer to another CRS (EPSG code, WKT or PROJ string).",
}
_RUNS = (" Inputs are a stored dataset ({\"dataset_id\": ...}) or inline GeoJSON ({\"geojson\": ...}, lon/lat). "
         "Small inputs answer at once; large ones run as a task and answer with a task handle "
         "(follow it with task_status and task_result).")

ANALYSIS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "description": "succeeded (result here) or submitted (task handle), or the "
                                                    "final task status when the call waited for its task"},
        "result": {"type": ["object", "null"], "description": "the output layer, or a summary with a handle to it"},
        "task": {"type": ["object", "null"], "description": "task handle: id, status, progress, links"},
    },
}
READ_OUTPUT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ToolSpec:
    """One tool as code defines it (the ``agent_tools`` row adds permissions, activity and rate limit)."""

    name: str
    title: str
    description: str
    kind: ToolKind
    params_model: type[BaseModel]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    @property
    def default_permissions(self) -> list[str]:
        return list(ANALYSIS_ROLES if self.kind == "analysis" else READ_ROLES)

    @property
    def default_rate_limit_qps(self) -> int:
        return DEFAULT_QPS[self.kind]


def agent_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema agents see for ``model``: ``$ref``s inlined (function-calling clients want one object)."""
    schema = model.model_json_schema(mode="validation")
    defs = schema.pop("$defs", {})
    return _inline(schema, defs)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **siblings}, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def distances_require_units(schema: Any) -> bool:
    """True when every property called ``distance`` (or ``*_distance``) is an object requiring value and unit."""
    if isinstance(schema, list):
        return all(distances_require_units(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    for name, prop in (schema.get("properties") or {}).items():
        if name == "distance" or name.endswith("_distance"):
            # an optional distance is anyOf [distance, null]; either way it is an object needing both
            options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
            if any(p.get("type") != "object" or not {"value", "unit"} <= set(p.get("required", [])) for p in options):
                return False
    return all(distances_require_units(value) for value in schema.values())


@lru_cache(maxsize=8)
def tool_specs(plugins: str) -> dict[str, ToolSpec]:
    """Every tool for the analysis registry in force (``plugins`` as in ``Settings.analysis_plugins``)."""
    specs: dict[str, ToolSpec] = {}
    for op in operations(plugins).values():
        model = parameters_model(op)  # the operation's settings plus its input layers and output name
        schema = agent_schema(model)
        if not distances_require_units(schema):  # a new params model must keep units on distances
            raise RuntimeError(f"agent schema of {op.name!r} accepts a distance without a unit")
        description = _ANALYSIS_HINTS.get(op.name, op.title + ".") + _RUNS
        specs[op.name] = ToolSpec(op.name, op.title, description, "analysis", model, schema, ANALYSIS_OUTPUT)
    for name, (model, title, description) in _READ_TOOLS.items():
        specs[name] = ToolSpec(name, title, description, "read", model, agent_schema(model), READ_OUTPUT)
    return specs


def openai_function(name: str, description: str, input_schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style function (tool) definition."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": input_schema}}
