"""Agent routes: the tool registry, sessions, tool calls, and a session's event stream (server-sent events)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from geoservice.agents import service
from geoservice.agents.tools import openai_function
from geoservice.api.deps import (
    CurrentUser,
    SessionDep,
    SessionmakerDep,
    SettingsDep,
    db_slot,
    get_principal,
    get_sessionmaker,
)
from geoservice.api.schemas.agents import (
    AgentSessionCreate,
    AgentSessionRead,
    AgentToolRead,
    InvocationRead,
    InvocationResult,
)
from geoservice.api.schemas.common import MAX_OFFSET, Page
from geoservice.db.models import AgentSession
from geoservice.db.repositories import agents as repo
from geoservice.errors import InvalidInput
from geoservice.services.access import Principal

router = APIRouter(prefix="/agent", tags=["agents"])


def get_runtime(request: Request) -> service.AgentRuntime:
    state = request.state
    return service.AgentRuntime(state.settings, state.sessionmaker, state.redis, state.queue)


def short_lived_principal(request: Request, _slot: Annotated[None, Depends(db_slot)]) -> Principal:
    """Authenticate as ``CurrentUser`` does, in a transaction of its own that ends at once.

    A tool call opens its own short transactions; holding the dependency's connection while it runs would
    take two pooled connections per call, and a burst of calls could exhaust the pool waiting on each other.
    """
    with get_sessionmaker(request).begin() as session:
        return get_principal(request, session)


RuntimeDep = Annotated[service.AgentRuntime, Depends(get_runtime)]
CallerDep = Annotated[Principal, Depends(short_lived_principal)]


def _read(request: Request, row: AgentSession) -> AgentSessionRead:
    out = AgentSessionRead.model_validate(row)
    base = str(request.url_for("get_agent_session", session_id=str(row.id)))
    out.links = {"self": base, "events": f"{base}/events", "invocations": f"{base}/invocations",
                 "invoke": f"{base}/tools/{{name}}/invoke"}
    return out


@router.get("/tools", response_model=None)
def list_tools(session: SessionDep, settings: SettingsDep, principal: CurrentUser,
               format: Annotated[Literal["native", "openai", "mcp"], Query(
                   description="native rows, OpenAI function schemas, or MCP tool definitions")] = "native",
               ) -> Any:
    """The tools you may call, with their JSON schemas (``format=openai`` for function-calling clients)."""
    tools = service.available_tools(session, settings.analysis_plugins, principal)
    if format == "openai":
        return [openai_function(t.name, t.description, t.input_schema) for t, _ in tools]
    if format == "mcp":
        return {"tools": [{"name": t.name, "title": t.title, "description": t.description,
                           "inputSchema": t.input_schema, "outputSchema": t.output_schema} for t, _ in tools]}
    return [AgentToolRead.model_validate(t, from_attributes=True) for t, _ in tools]


@router.post("/sessions", status_code=201, response_model=AgentSessionRead)
def create_session(body: AgentSessionCreate, request: Request, response: Response, session: SessionDep,
                   principal: CurrentUser) -> AgentSessionRead:
    """Open an agent session: tool calls and their events are recorded in it."""
    out = _read(request, service.create_session(session, principal, title=body.title, mode=body.mode))
    response.headers["Location"] = out.links["self"]
    return out


@router.get("/sessions", response_model=Page[AgentSessionRead])
def list_sessions(request: Request, session: SessionDep, principal: CurrentUser, settings: SettingsDep,
                  limit: Annotated[int | None, Query(ge=1)] = None,
                  offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Page[AgentSessionRead]:
    """Your agent sessions, newest first."""
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    rows, total = repo.list_sessions(session, principal.user_id, limit=limit, offset=offset)
    return Page[AgentSessionRead](data=[_read(request, r) for r in rows], count=total, limit=limit, offset=offset)


@router.get("/sessions/{session_id}", response_model=AgentSessionRead, name="get_agent_session")
def get_session(request: Request, session_id: uuid.UUID, session: SessionDep,
                principal: CurrentUser) -> AgentSessionRead:
    """One of your sessions."""
    return _read(request, service.get_session(session, session_id, principal))


@router.post("/sessions/{session_id}/close", response_model=AgentSessionRead)
def close_session(request: Request, session_id: uuid.UUID, session: SessionDep,
                  principal: CurrentUser) -> AgentSessionRead:
    """Close a session: it keeps its history and takes no more tool calls."""
    return _read(request, service.close_session(session, session_id, principal))


@router.get("/sessions/{session_id}/invocations", response_model=Page[InvocationRead])
def list_invocations(session_id: uuid.UUID, session: SessionDep, principal: CurrentUser, settings: SettingsDep,
                     limit: Annotated[int | None, Query(ge=1)] = None,
                     offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Page[InvocationRead]:
    """The session's tool calls, oldest first."""
    service.get_session(session, session_id, principal)
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    rows, total = repo.list_invocations(session, session_id, limit=limit, offset=offset)
    data = [InvocationRead.model_validate({**_columns(inv), "tool": name}) for inv, name in rows]
    return Page[InvocationRead](data=data, count=total, limit=limit, offset=offset)


def _columns(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in InvocationRead.model_fields if c != "tool"}


@router.post("/sessions/{session_id}/tools/{name}/invoke", response_model=InvocationResult,
             responses={202: {"description": "the call became an analysis task: follow ``task``"}})
def invoke_tool(
    session_id: uuid.UUID, name: str, request: Request, response: Response, rt: RuntimeDep, principal: CallerDep,
    args: Annotated[Any, Body(description="the tool's arguments (a JSON object)")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> InvocationResult:
    """Call a tool. Small inputs answer with the ``result`` (200); large analyses become a task (202 with a
    ``task`` handle whose progress is pushed to the session's events). ``Idempotency-Key`` makes a retry return
    the first call's answer."""
    outcome = service.invoke(rt, principal, session_id, name, {} if args is None else args, idempotency_key)
    if outcome.status == "submitted":
        response.status_code = 202
        response.headers["Location"] = str(request.url_for("get_task", task_id=outcome.task["id"]))  # type: ignore[index]
    if outcome.replay_of:
        response.headers["Idempotent-Replayed"] = "true"
    return InvocationResult.model_validate(outcome.body())


@router.get("/sessions/{session_id}/events")
async def session_events(
    request: Request, session_id: uuid.UUID, factory: SessionmakerDep, principal: CurrentUser,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event id (as Last-Event-ID)")] = None,
    follow: Annotated[bool, Query(description="keep the stream open for new events")] = True,
    interval: Annotated[float, Query(ge=0.1, le=10)] = 0.5,
) -> StreamingResponse:
    """Server-sent events of the session: tool calls started and finished, task progress, task finished.

    Each event's ``id`` is its sequence number; reconnect with ``Last-Event-ID`` to resume after it.
    """
    await run_in_threadpool(_own, factory, session_id, principal)  # 404 before the stream starts
    start = after if after is not None else _event_id(last_event_id)
    return StreamingResponse(_stream(request, factory, session_id, start, follow, interval),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event_id(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return 0
    if not raw.strip().isdigit():
        raise InvalidInput("Last-Event-ID: expected the id of an event of this stream", field="Last-Event-ID")
    return int(raw.strip())


def _own(factory: sessionmaker[Session], session_id: uuid.UUID, principal: Principal) -> None:
    with factory() as session:
        service.get_session(session, session_id, principal)


def _fetch(factory: sessionmaker[Session], session_id: uuid.UUID, after: int) -> list[tuple[int, str, bytes]]:
    with factory() as session:
        rows = repo.events_after(session, session_id, after)
        return [(e.seq, e.kind, orjson.dumps({"id": str(e.id), "seq": e.seq, "kind": e.kind,
                                              "created_at": e.created_at, **e.payload})) for e in rows]


async def _stream(request: Request, factory: sessionmaker[Session], session_id: uuid.UUID, after: int,
                  follow: bool, interval: float) -> AsyncIterator[bytes]:
    idle = 0.0
    while True:
        events = await run_in_threadpool(_fetch, factory, session_id, after)
        for seq, kind, data in events:
            after = seq
            yield f"id: {seq}\nevent: {kind}\ndata: ".encode() + data + b"\n\n"
        if events:
            idle = 0.0
            continue  # there may be more than one page
        if not follow or await request.is_disconnected():
            return
        idle += interval
        if idle >= 15:
            idle = 0.0
            yield b": keep-alive\n\n"
        await asyncio.sleep(interval)

