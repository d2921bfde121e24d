"""The tool registry: schemas from the params models, units required, argument errors naming the argument,
OpenAI export, and the idempotent sync into ``agent_tools``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from geoservice.agents.service import sync_tools
from geoservice.agents.tools import distances_require_units, tool_specs
from geoservice.agents.validation import validate_args
from geoservice.analysis.buffer import BufferParams
from geoservice.db.engine import make_engine, make_sessionmaker, transaction
from geoservice.errors import InvalidInput
from geoservice.services.operations import operations
from tests.conftest import authed_client

PLUGINS = "tests.plugins.slow:OPERATION"
READ_TOOLS = {"list_datasets", "describe_dataset", "query_features", "task_status", "task_result"}


def specs() -> dict[str, Any]:
    return tool_specs(PLUGINS)


def test_every_operation_and_read_tool_is_a_tool() -> None:
    assert set(specs()) == set(operations(PLUGINS)) | READ_TOOLS
    assert {"buffer", "overlay", "reproject"} <= set(specs())
    for spec in specs().values():
        assert spec.input_schema["type"] == "object" and "$defs" not in spec.input_schema
        assert spec.output_schema["type"] == "object" and spec.description


def test_agent_schemas_come_from_the_params_models_and_require_units() -> None:
    schema = specs()["buffer"].input_schema
    # the operation's settings, plus what the request adds: its input layer and output name
    assert set(schema["properties"]) == set(BufferParams.model_fields) | {"input", "output_name"}
    distance = schema["properties"]["distance"]
    assert distance["type"] == "object" and set(distance["required"]) == {"value", "unit"}
    assert set(distance["properties"]["unit"]["enum"]) == {"m", "km", "mi", "ft", "nmi", "degrees", "crs"}
    assert schema["additionalProperties"] is False and "unit" not in schema["properties"]
    assert all(distances_require_units(s.input_schema) for s in specs().values())
    assert not distances_require_units({"properties": {"distance": {"type": "number"}}})


def _refused(tool: str, args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        validate_args(specs()[tool], args)
    return info.value


@pytest.mark.parametrize("args,field,words", [
    ({"distance": 500}, "distance", ["bare number", "unit"]),
    ({"distance": 500, "unit": "m"}, "distance", ["unit", "inside distance"]),  # the REST API's flat form
    ({"distance": {"value": 500}}, "distance.unit", ["missing"]),
    ({"distance": {"value": 500, "unit": "furlong"}}, "distance.unit", ["furlong"]),
    ({}, "distance", ["missing"]),
    ({"distance": {"value": 5, "unit": "m"}, "radius": 3}, "radius", ["unknown argument"]),
])
def test_bad_buffer_arguments_are_named(args: dict[str, Any], field: str, words: list[str]) -> None:
    exc = _refused("buffer", {"input": {"dataset_id": str(uuid.uuid4())}, **args})
    assert exc.status_code == 422 and exc.field == field, (exc.field, exc.detail)
    assert all(w in exc.detail for w in words), exc.detail
    assert exc.extra["errors"][0]["field"] == field


def test_rules_of_the_params_model_apply_too() -> None:
    exc = _refused("buffer", {"input": {"dataset_id": str(uuid.uuid4()), "geojson": {}},
                              "distance": {"value": 1, "unit": "m"}})
    assert exc.field == "input" and "exactly one" in exc.detail
    assert _refused("query_features", {"dataset_id": "x"}).field == "dataset_id"
    assert _refused("query_features", {"dataset_id": str(uuid.uuid4()), "bbox": [1, 2]}).field == "bbox"
    assert _refused("task_status", []).field == "arguments"


def test_the_rest_api_keeps_its_flat_form_but_agents_do_not() -> None:
    args = {"input": {"dataset_id": str(uuid.uuid4())}, "distance": 500, "unit": "m"}
    assert specs()["buffer"].params_model.model_validate(args).distance.metres() == 500  # type: ignore[attr-defined]
    assert _refused("buffer", args).field == "distance"
    nested = {"input": args["input"], "distance": {"value": 500, "unit": "m"}}
    assert validate_args(specs()["buffer"], nested).distance.metres() == 500  # type: ignore[attr-defined]


def test_tool_list_native_openai_and_mcp(client: TestClient) -> None:
    native = client.get("/api/v1/agent/tools")
    assert native.status_code == 200, native.text
    by_name = {t["name"]: t for t in native.json()}
    assert {"buffer", "overlay", "reproject", *READ_TOOLS} <= set(by_name)
    assert by_name["buffer"]["rate_limit_qps"] > 0 and "analyst" in by_name["buffer"]["permissions"]
    openai = client.get("/api/v1/agent/tools", params={"format": "openai"}).json()
    functions = {f["function"]["name"]: f for f in openai}
    assert all(f["type"] == "function" for f in openai)
    assert functions["buffer"]["function"]["parameters"] == by_name["buffer"]["input_schema"]
    assert functions["buffer"]["function"]["parameters"]["properties"]["distance"]["required"] == ["value", "unit"]
    mcp = client.get("/api/v1/agent/tools", params={"format": "mcp"}).json()["tools"]
    assert {t["name"] for t in mcp} == set(by_name) and all("inputSchema" in t for t in mcp)


def test_viewers_are_offered_read_tools_only(app: Any, settings: Any) -> None:
    viewer = authed_client(app, settings, ["viewer"])
    try:
        names = {t["name"] for t in viewer.get("/api/v1/agent/tools").json()}
    finally:
        viewer.__exit__(None, None, None)
    assert names == READ_TOOLS


def test_sync_is_idempotent_and_keeps_operator_settings(settings: Any, pg: Any) -> None:
    engine = make_engine(settings, "cli")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            sync_tools(session, settings.analysis_plugins)
        before = pg.execute("SELECT name, updated_at FROM agent_tools ORDER BY name").fetchall()
        pg.execute("UPDATE agent_tools SET rate_limit_qps = 7 WHERE name = 'overlay'")
        with transaction(make_sessionmaker(engine)) as session:
            sync_tools(session, settings.analysis_plugins)
            sync_tools(session, settings.analysis_plugins)
        after = pg.execute("SELECT name, updated_at FROM agent_tools ORDER BY name").fetchall()
        assert before == after  # nothing changed: no update at all
        assert pg.execute("SELECT rate_limit_qps FROM agent_tools WHERE name='overlay'").fetchone()[0] == 7
    finally:
        pg.execute("UPDATE agent_tools SET rate_limit_qps = 5 WHERE name = 'overlay'")
        engine.dispose()


def test_agent_tools_rows_have_every_column(client: TestClient, pg: Any) -> None:
    client.get("/api/v1/agent/tools")
    columns = ["id", "name", "title", "description", "input_schema", "output_schema", "permissions", "is_active",
               "rate_limit_qps", "created_at", "updated_at"]
    rows = pg.execute(f"SELECT {', '.join(columns)} FROM agent_tools").fetchall()
    assert len(rows) >= 8
    for row in rows:
        assert all(value is not None for value in row), row
        assert row[6] and row[7] is True
