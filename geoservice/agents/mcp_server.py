"""The MCP server: the agent tools over the Model Context Protocol (official ``mcp`` SDK 2.x, low-level ``Server``).

Every MCP tool call goes through ``services.agents.invoke`` like a REST call (recorded, rate limited,
idempotent with ``_meta.idempotencyKey``), in an agent session opened per MCP connection. When a call becomes
an analysis task the server follows the task, sending ``notifications/progress`` for the request's
``progressToken`` on every change (and at least every ``mcp_progress_heartbeat_s``, so clients do not time
out), and answers with the task's result; after ``mcp_task_wait_s`` it answers with the task handle instead,
which the ``task_status`` and ``task_result`` tools follow up. Tool errors are results with ``isError`` and the
error body (``error``, ``detail``, ``field``) as structured content, so an agent can correct its arguments.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import orjson
from mcp.server import Server, ServerRequestContext

from geoservice import __version__
from geoservice.agents import service, tool_runs
from geoservice.agents.tool_runs import AgentRuntime
from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger
from geoservice.services import analyses
from geoservice.services.access import Principal

log = get_logger(__name__)
MAX_REMEMBERED_SESSIONS = 10_000
PrincipalOf = Callable[[ServerRequestContext[Any, Any]], Awaitable[Principal]]
INSTRUCTIONS = ("Spatial analysis on PostGIS datasets. Start with list_datasets; buffer, overlay and reproject take "
                "a dataset_id or inline GeoJSON; every distance carries a unit ({\"value\": 500, \"unit\": \"m\"}). "
                "Long analyses report progress and can be followed with task_status and task_result.")


@dataclass
class McpAgent:
    """The state shared by one MCP server's connections: the runtime and an agent session per connection."""

    rt: AgentRuntime
    mode: str  # "mcp-http" or "mcp-stdio"
    principal_of: PrincipalOf
    sessions: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def session_for(self, ctx: ServerRequestContext[Any, Any], principal: Principal) -> uuid.UUID:
        """The agent session of this MCP connection (opened at its first tool call)."""
        request = ctx.request
        connection = request.headers.get("mcp-session-id", "") if request is not None else "stdio"
        key = (principal.user_id, connection or f"request-{uuid.uuid4()}")
        async with self.lock:
            if key not in self.sessions:
                info = ctx.session.client_params.client_info if ctx.session.client_params else None
                title = f"MCP: {info.name if info else 'client'}"
                self.sessions[key] = await anyio.to_thread.run_sync(self._open, principal, title)
                if len(self.sessions) > MAX_REMEMBERED_SESSIONS:  # forget the oldest connections
                    self.sessions.pop(next(iter(self.sessions)))
        return self.sessions[key]

    def _open(self, principal: Principal, title: str) -> uuid.UUID:
        with self.rt.factory.begin() as session:
            return service.create_session(session, principal, title=title, mode=self.mode).id


def build_server(agent: McpAgent) -> Server[Any]:
    """A low-level MCP server with ``tools/list`` and ``tools/call`` over the agent tools."""

    async def list_tools(ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        principal = await agent.principal_of(ctx)
        rows = await anyio.to_thread.run_sync(_tools, agent.rt, principal)
        return types.ListToolsResult(tools=[
            types.Tool(name=t.name, title=t.title, description=t.description, input_schema=t.input_schema,
                       output_schema=t.output_schema) for t in rows])

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        try:
            principal = await agent.principal_of(ctx)
            session_id = await agent.session_for(ctx, principal)
            key = (ctx.meta or {}).get("idempotencyKey")
            outcome = await anyio.to_thread.run_sync(service.invoke, agent.rt, principal, session_id, params.name,
                                                     params.arguments or {}, str(key) if key else None)
            if outcome.status != "submitted" or outcome.task_id is None:
                return _ok(outcome.body())
            return await _follow(ctx, agent.rt, principal, outcome)
        except GeoserviceError as exc:
            return _error(params.name, exc)
        except Exception:
            log.exception("MCP tool call failed", tool=params.name)
            return _text_error(f"{params.name}: internal error; see the server log", {"error": "InternalError"})

    return Server("geoservice", version=__version__, title="geoservice spatial tools", instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _tools(rt: AgentRuntime, principal: Principal) -> list[Any]:
    with rt.factory.begin() as session:
        rows = service.available_tools(session, rt.settings.analysis_plugins, principal)
        session.expunge_all()
    return [row for row, _ in rows]


async def _follow(ctx: ServerRequestContext[Any, Any], rt: AgentRuntime, principal: Principal,
                  outcome: service.Outcome) -> types.CallToolResult:
    """Wait for the call's task, reporting its progress; answer with its result (or the handle, at the limit)."""
    task_id = outcome.task_id
    assert task_id is not None
    s = rt.settings
    progress, message, final = 0.0, "task accepted", None
    async for snap in analyses.follow(rt.factory, principal, task_id, interval=s.mcp_poll_interval_s,
                                      timeout=s.mcp_task_wait_s, heartbeat=s.mcp_progress_heartbeat_s):
        if snap is not None:  # None: nothing changed for a while; repeat the last progress as a heartbeat
            progress = max(progress, snap.progress)  # progress never goes back
            message = f"task {task_id} {snap.status}" + (
                f": {snap.phase}" if snap.phase and snap.phase != snap.status else "") + (
                f" ({snap.chunks_done}/{snap.chunks_total} chunks)" if snap.chunks_total else "")
            final = snap if snap.final else None
        await ctx.session.report_progress(progress, 100.0, message)
    if final is None:
        return _ok(outcome.body() | {"note": f"the task is still running after {s.mcp_task_wait_s:.0f} s; "
                                             "follow it with task_status and task_result"})
    answer = await anyio.to_thread.run_sync(_result, rt, principal, task_id)
    body = {"invocation_id": str(outcome.invocation_id), "tool": outcome.tool, **answer}
    if final.status != "successful":
        task = answer["task"]
        detail = task.get("error_message") or f"the task ended {final.status}"
        return _text_error(f"{outcome.tool}: task {final.status}: {task.get('error_code') or ''} {detail}".strip(),
                           body)
    return _ok(body)


def _result(rt: AgentRuntime, principal: Principal, task_id: uuid.UUID) -> dict[str, Any]:
    with rt.factory() as session:
        return tool_runs.task_result(rt, session, principal, task_id)


def _ok(body: dict[str, Any]) -> types.CallToolResult:
    data = orjson.loads(orjson.dumps(body, default=str))
    return types.CallToolResult(content=[types.TextContent(text=orjson.dumps(data).decode())],
                                structured_content=data)


def _error(tool: str, exc: GeoserviceError) -> types.CallToolResult:
    body = exc.to_dict()
    text = f"{exc.code}: {exc.detail}" if exc.detail.startswith(f"{tool}:") else f"{exc.code}: {tool}: {exc.detail}"
    if exc.field:
        text += f" [argument: {exc.field}]"
    if "retry_after" in exc.extra:
        text += f" (retry in {exc.extra['retry_after']} s)"
    return _text_error(text, body)


def _text_error(text: str, body: dict[str, Any]) -> types.CallToolResult:
    data = orjson.loads(orjson.dumps(body, default=str))
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=data, is_error=True)
