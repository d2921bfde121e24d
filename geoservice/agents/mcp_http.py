"""MCP over streamable HTTP inside the FastAPI app: API-key authentication and the session manager.

The app's lifespan builds one ``StreamableHTTPSessionManager`` per run (a manager runs only once) and keeps it
in the lifespan state; ``McpEndpoint`` (mounted at ``/mcp``) authenticates every request with an API key
(``X-API-Key`` or ``Authorization: Bearer gs_...``) and hands it to that manager. An MCP session is bound to
the user that opened it: the SDK answers 404 to anyone else presenting its session id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from geoservice import security
from geoservice.agents.mcp_server import McpAgent, build_server
from geoservice.agents.service import sync_tools
from geoservice.agents.tool_runs import AgentRuntime
from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger
from geoservice.services.access import Principal, Unauthorized
from geoservice.services.auth import api_key_use_due, principal_from_api_key, touch_api_key

log = get_logger(__name__)
PRINCIPAL_KEY = "geoservice.principal"
STATE_KEY = "mcp"
#: An idle MCP session is closed after this long (the client opens a new one).
SESSION_IDLE_TIMEOUT_S = 30 * 60


def session_manager(rt: AgentRuntime) -> StreamableHTTPSessionManager:
    """A fresh session manager for one run of the app (enter ``.run()`` in the lifespan)."""
    agent = McpAgent(rt, "mcp-http", _principal_of)
    return StreamableHTTPSessionManager(app=build_server(agent), json_response=False, stateless=False,
                                        session_idle_timeout=SESSION_IDLE_TIMEOUT_S)


async def _principal_of(ctx: ServerRequestContext[Any, Any]) -> Principal:
    request = ctx.request
    principal = request.scope.get(PRINCIPAL_KEY) if request is not None else None
    if not isinstance(principal, Principal):  # pragma: no cover - McpEndpoint always sets it
        raise Unauthorized("MCP over HTTP needs an API key")
    return principal


def api_key_of(headers: dict[bytes, bytes]) -> str | None:
    """The API key of a request: ``X-API-Key``, or ``Authorization: Bearer gs_...``."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


def authenticate(factory: sessionmaker[Session], key: str | None) -> Principal:
    """Resolve an API key to its principal (its own short transaction: ``last_used_at`` is committed)."""
    if not key or security.api_key_prefix(key) is None:
        raise Unauthorized("MCP needs an API key (gs_...): over HTTP send 'X-API-Key: gs_...' or "
                           "'Authorization: Bearer gs_...'")
    with factory.begin() as session:
        principal = principal_from_api_key(session, key)
        if api_key_use_due(principal):
            touch_api_key(session, principal)
        return principal


class McpEndpoint:
    """The ASGI endpoint at ``/mcp``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state") or {}
        manager: StreamableHTTPSessionManager | None = state.get(STATE_KEY)
        if manager is None:  # pragma: no cover - the lifespan did not run
            await _json(send, 503, {"error": "ServiceUnavailable", "detail": "MCP is not running"})
            return
        headers = dict(scope.get("headers") or [])
        try:
            principal = await anyio.to_thread.run_sync(authenticate, state["sessionmaker"], api_key_of(headers))
        except GeoserviceError as exc:
            extra = [(b"www-authenticate", b"Bearer")] if exc.status_code == 401 else []
            await _json(send, exc.status_code, exc.to_dict(), extra)
            return
        scope[PRINCIPAL_KEY] = principal
        # Binds the MCP session to this user: another user's requests with its session id get a 404.
        scope["user"] = AuthenticatedUser(AccessToken(token="api-key", client_id=str(principal.user_id),
                                                      scopes=sorted(principal.roles), subject=str(principal.user_id)))
        await manager.handle_request(scope, receive, send)


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
                ) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})



@asynccontextmanager
async def agent_layer(rt: AgentRuntime) -> AsyncIterator[StreamableHTTPSessionManager]:
    """For the app's lifespan: sync the tool registry (best effort), run the MCP session manager."""
    try:
        await anyio.to_thread.run_sync(_sync, rt)
    except Exception:  # the database may come up later; tool calls sync again when a row is missing
        log.exception("could not sync the agent tools at start-up")
    manager = session_manager(rt)
    async with manager.run():
        yield manager


def _sync(rt: AgentRuntime) -> None:
    with rt.factory.begin() as session:
        sync_tools(session, rt.settings.analysis_plugins)
