"""Agent use-cases: tool sync and listing, sessions, and tool calls (invocations).

A call is recorded before anything else can fail (``running``, with a ``tool_call_started`` event), then
checked (permission, arguments, Idempotency-Key, rate limit), run, and finished with its status, result or
error and latency (with a ``tool_call_finished`` event). Each of those writes is its own short transaction,
so the session's event stream shows a call while it runs. Sessions belong to one user: anyone else's are
"not found", for admins too (they hold an agent's working context, not shared data).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, update
from sqlalchemy.orm import Session

from geoservice.agents import tool_runs as run
from geoservice.agents.guard import IdempotentCall, take_token
from geoservice.agents.tool_runs import AgentRuntime
from geoservice.agents.tools import ToolSpec, tool_specs
from geoservice.agents.validation import validate_args
from geoservice.analysis.request import AnalysisRequest
from geoservice.db.engine import transaction
from geoservice.db.models import AgentSession, AgentTool, AgentToolInvocation
from geoservice.db.repositories import agents as repo
from geoservice.errors import Conflict, GeoserviceError, NotFound
from geoservice.logging import get_logger
from geoservice.queue import send_after_commit
from geoservice.services import analyses
from geoservice.services.access import Forbidden, Principal
from geoservice.services.operations import operations

log = get_logger(__name__)
EVENT_ARGS_MAX_BYTES = 4096

__all__ = ["AgentRuntime", "Outcome", "available_tools", "create_session", "get_session", "invoke", "sync_tools"]


@dataclass(frozen=True)
class Outcome:
    """The answer to one tool call: a result (``succeeded``) or a task handle (``submitted``)."""

    invocation_id: uuid.UUID
    tool: str
    status: str
    result: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    latency_ms: int = 0
    replay_of: str | None = None
    task_id: uuid.UUID | None = field(default=None, repr=False)

    def body(self) -> dict[str, Any]:
        out = {"invocation_id": str(self.invocation_id), "tool": self.tool, "status": self.status,
               "replayed": self.replay_of is not None, "latency_ms": self.latency_ms, "result": self.result,
               "task": self.task}
        return out | ({"replay_of": self.replay_of} if self.replay_of else {})


# --- tools --------------------------------------------------------------------------------------------

def sync_tools(session: Session, plugins: str) -> None:
    """Bring ``agent_tools`` up to date with the code (idempotent; run at start-up)."""
    repo.sync_tools(session, [{
        "name": s.name, "title": s.title, "description": s.description, "kind": s.kind,
        "input_schema": s.input_schema, "output_schema": s.output_schema,
        "permissions": s.default_permissions, "rate_limit_qps": s.default_rate_limit_qps,
    } for s in tool_specs(plugins).values()])


def allowed(principal: Principal, tool: AgentTool) -> bool:
    return principal.is_admin or bool(principal.roles & set(tool.permissions or []))


def available_tools(session: Session, plugins: str, principal: Principal) -> list[tuple[AgentTool, ToolSpec]]:
    """The active tools the principal may call, with their specs (reads only: a tool the start-up sync has not
    stored yet is shown with its defaults, and stored at its first call)."""
    specs = tool_specs(plugins)
    stored = {row.name: row for row in repo.tools(session, specs)}
    rows = [stored.get(name) or _unsynced(spec) for name, spec in sorted(specs.items())]
    return [(row, specs[row.name]) for row in rows if row.is_active and allowed(principal, row)]


def _unsynced(spec: ToolSpec) -> AgentTool:
    """A tool as its code defines it, not attached to any session."""
    return AgentTool(name=spec.name, title=spec.title, description=spec.description, kind=spec.kind,
                     input_schema=spec.input_schema, output_schema=spec.output_schema,
                     permissions=spec.default_permissions, rate_limit_qps=spec.default_rate_limit_qps, is_active=True)


# --- sessions -----------------------------------------------------------------------------------------

def create_session(session: Session, principal: Principal, *, title: str | None, mode: str = "rest") -> AgentSession:
    row = AgentSession(user_id=principal.user_id, title=(title or f"{mode} session").strip()[:255], mode=mode,
                       status="active")
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def get_session(session: Session, session_id: uuid.UUID, principal: Principal) -> AgentSession:
    row = repo.own_session(session, session_id, principal.user_id)
    if row is None:
        raise NotFound(f"agent session {session_id} not found", field="session_id")
    return row


def close_session(session: Session, session_id: uuid.UUID, principal: Principal) -> AgentSession:
    row = get_session(session, session_id, principal)
    row.status = "closed"
    row.updated_at = func.now()  # type: ignore[assignment]
    session.flush()
    session.refresh(row)
    return row


# --- tool calls ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Call:
    rt: AgentRuntime
    principal: Principal
    session_id: uuid.UUID
    tool: AgentTool
    spec: ToolSpec
    args: Any
    idempotency_key: str | None
    invocation_id: uuid.UUID
    started: float


def invoke(rt: AgentRuntime, principal: Principal, session_id: uuid.UUID, tool_name: str, args: Any,
           idempotency_key: str | None = None) -> Outcome:
    """Call ``tool_name`` with ``args`` in the principal's session ``session_id``; record it all.

    A call refused before it runs (permission, arguments, rate limit) or answered from its Idempotency-Key is
    recorded in one transaction; a call that runs is recorded when it starts and when it ends.

    Raises:
        NotFound: no such session (of the principal's) or tool. Conflict: the session is closed.
        Forbidden, InvalidInput, RateLimited, or the tool's own errors (recorded on the invocation).
    """
    started = time.monotonic()
    tool, spec = _resolve(rt, principal, session_id, tool_name)
    call = _Call(rt, principal, session_id, tool, spec, args, idempotency_key, uuid.uuid4(), started)
    idem = None
    try:
        params = _admit(call)
        if idempotency_key:
            key = IdempotentCall.open(rt.redis, principal.user_id, tool.name, idempotency_key, args,
                                      rt.settings.agent_idempotency_ttl_s)
            first = key.begin(rt.settings.agent_idempotency_wait_s)
            if first is not None:
                return _replay(call, first)
            idem = key  # ours from here on: released if the call fails
        take_token(rt.redis, tool.name, principal.user_id, tool.rate_limit_qps)
    except GeoserviceError as exc:
        if idem is not None:
            idem.release()
        _record_refusal(call, exc)
        raise
    _start(call)
    try:
        outcome = _execute(call, params)
    except BaseException as exc:
        if idem is not None:
            idem.release()
        _fail(call, exc)
        raise
    if idem is not None:
        idem.complete(outcome.body() | {"task_id": str(outcome.task_id) if outcome.task_id else None})
    return outcome


def _resolve(rt: AgentRuntime, principal: Principal, session_id: uuid.UUID, tool_name: str
             ) -> tuple[AgentTool, ToolSpec]:
    specs = tool_specs(rt.settings.analysis_plugins)
    with transaction(rt.factory) as session:
        agent_session = get_session(session, session_id, principal)
        if agent_session.status != "active":
            raise Conflict(f"agent session {session_id} is closed", field="session_id")
        tool = repo.tool_by_name(session, tool_name) if tool_name in specs else None
        if tool is None and tool_name in specs:
            sync_tools(session, rt.settings.analysis_plugins)
            tool = repo.tool_by_name(session, tool_name)
        if tool is None or not tool.is_active:
            raise NotFound(f"tool {tool_name!r} not found; list the tools to see what you can call", field="tool")
        session.expunge(tool)
        return tool, specs[tool_name]


def _admit(call: _Call) -> Any:
    """Check the caller may use the tool and the arguments are valid; return the parsed arguments."""
    tool, principal = call.tool, call.principal
    if not allowed(principal, tool):
        raise Forbidden(f"{tool.name}: your roles ({', '.join(sorted(principal.roles)) or 'none'}) may not call "
                        f"this tool; it needs one of {sorted(tool.permissions or [])}", field="tool")
    return validate_args(call.spec, call.args)


def _insert(session: Session, call: _Call, status: str, **values: Any) -> None:
    """Record the invocation and its ``tool_call_started`` event; mark the session active now."""
    repo.touch_session(session, call.session_id)
    session.add(AgentToolInvocation(id=call.invocation_id, session_id=call.session_id, user_id=call.principal.user_id,
                                    tool_id=call.tool.id, args=call.args if call.args is not None else {},
                                    status=status, idempotency_key=call.idempotency_key, **values))
    session.flush()
    repo.add_event(session, call.session_id, call.principal.user_id, "tool_call_started",
                   {"invocation_id": str(call.invocation_id), "tool": call.tool.name, "args": _event_args(call.args)})


def _start(call: _Call) -> None:
    with transaction(call.rt.factory) as session:
        _insert(session, call, "running")


def _event_args(args: Any) -> Any:
    size = len(orjson.dumps(args))
    return args if size <= EVENT_ARGS_MAX_BYTES else {"truncated": True, "bytes": size}


def _execute(call: _Call, params: Any) -> Outcome:
    rt, spec = call.rt, call.spec
    if spec.kind == "read":
        with transaction(rt.factory) as session:
            result = run.run_read(rt, session, call.principal, spec.name, params)
            return _finish(session, call, "succeeded", result=result)
    op = operations(rt.settings.analysis_plugins)[spec.name]
    call.principal.require_write("run analyses")
    request = AnalysisRequest.from_wire(op, params)
    with _enqueuing(rt) as session:  # one transaction, so one connection at a time
        prepared = analyses.prepare(session, call.principal, op.name, request, plugins=rt.settings.analysis_plugins,
                                    field_prefix="")
        if run.is_small(rt, prepared):
            result = run.run_inline(rt, session, call.principal, prepared, call.invocation_id)
            return _finish(session, call, "succeeded", result=result)
        task = run.submit(rt, session, call.principal, prepared, call.invocation_id)
        return _finish(session, call, "submitted", task=run.task_summary(task), task_id=task.id)


@contextmanager
def _enqueuing(rt: AgentRuntime) -> Iterator[Session]:
    """A transaction whose tasks are sent to the queue once it commits (as the API's session dependency)."""
    with transaction(rt.factory) as session:
        yield session
    send_after_commit(session, rt.queue)


def _latency(call: _Call) -> int:
    return int(round((time.monotonic() - call.started) * 1000))


def _finish(session: Session, call: _Call, status: str, *, result: dict[str, Any] | None = None,
            task: dict[str, Any] | None = None, task_id: uuid.UUID | None = None) -> Outcome:
    latency = _latency(call)
    stored = {"task": task} if task is not None and result is None else result
    session.execute(update(AgentToolInvocation).where(AgentToolInvocation.id == call.invocation_id).values(
        status=status, result=stored, latency_ms=latency, finished_at=func.now(), task_id=task_id))
    _finished_event(session, call, status, latency, task_id=str(task_id) if task_id else None)
    return Outcome(call.invocation_id, call.tool.name, status, result, task, latency, None, task_id)


def _finished_event(session: Session, call: _Call, status: str, latency: int, **payload: Any) -> None:
    repo.add_event(session, call.session_id, call.principal.user_id, "tool_call_finished", {
        "invocation_id": str(call.invocation_id), "tool": call.tool.name, "status": status, "latency_ms": latency,
        **payload})


def _replay(call: _Call, first: dict[str, Any]) -> Outcome:
    """Answer an Idempotency-Key retry with the first call's answer (recorded as ``replayed``)."""
    task_id = uuid.UUID(first["task_id"]) if first.get("task_id") else None
    result, task, replay_of = first.get("result"), first.get("task"), first["invocation_id"]
    latency = _latency(call)
    with transaction(call.rt.factory) as session:
        _insert(session, call, "replayed", result={"replay_of": replay_of, "result": result, "task": task},
                task_id=task_id, latency_ms=latency, finished_at=func.now())
        _finished_event(session, call, "replayed", latency, replay_of=replay_of,
                        task_id=str(task_id) if task_id else None)
    return Outcome(call.invocation_id, call.tool.name, first["status"], result, task, latency, replay_of, task_id)


def _error_body(exc: BaseException) -> tuple[dict[str, Any], str]:
    """The recorded error and status: ``rejected`` for 403/429 (the call never ran), else ``failed``."""
    if isinstance(exc, GeoserviceError):
        status = "rejected" if exc.status_code in (403, 429) else "failed"
        return exc.to_dict() | {"status_code": exc.status_code}, status
    return {"error": "InternalError", "detail": "internal error; see the server log", "status_code": 500}, "failed"


def _record_refusal(call: _Call, exc: GeoserviceError) -> None:
    error, status = _error_body(exc)
    exc.extra.setdefault("invocation_id", str(call.invocation_id))
    try:
        latency = _latency(call)
        with transaction(call.rt.factory) as session:
            _insert(session, call, status, error=error, latency_ms=latency, finished_at=func.now())
            _finished_event(session, call, status, latency, error=error.get("error"), detail=error.get("detail"))
    except Exception:  # the caller's error matters more than its record
        log.exception("could not record a refused tool call", invocation_id=str(call.invocation_id))


def _fail(call: _Call, exc: BaseException) -> None:
    error, status = _error_body(exc)
    if isinstance(exc, GeoserviceError):
        exc.extra.setdefault("invocation_id", str(call.invocation_id))
    try:
        latency = _latency(call)
        with transaction(call.rt.factory) as session:
            session.execute(update(AgentToolInvocation).where(AgentToolInvocation.id == call.invocation_id).values(
                status=status, error=error, latency_ms=latency, finished_at=func.now()))
            _finished_event(session, call, status, latency, error=error.get("error"), detail=error.get("detail"))
    except Exception:  # the caller's error matters more than its record
        log.exception("could not record a failed tool call", invocation_id=str(call.invocation_id))
