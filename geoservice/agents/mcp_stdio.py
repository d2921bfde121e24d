"""``geoservice mcp``: the MCP server over stdio, acting as the user of ``GEOSERVICE_MCP_API_KEY``.

The key is checked at start (a bad key ends the process with a message on stderr) and again on every
request, so revoking it takes effect at once. Logs go to stderr; stdout carries only the protocol.
"""

from __future__ import annotations

from typing import Any

import anyio
import redis
from mcp.server import ServerRequestContext
from mcp.server.stdio import stdio_server

from geoservice.agents.mcp_http import authenticate
from geoservice.agents.mcp_server import McpAgent, build_server
from geoservice.agents.service import sync_tools
from geoservice.agents.tool_runs import AgentRuntime
from geoservice.config import Settings
from geoservice.db.engine import make_engine, make_sessionmaker
from geoservice.logging import get_logger
from geoservice.queue import CeleryTaskQueue
from geoservice.services.access import Principal, Unauthorized

log = get_logger(__name__)


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes it."""
    engine = make_engine(settings, "cli")
    factory = make_sessionmaker(engine)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=30)
    queue = CeleryTaskQueue(settings)
    try:
        try:
            principal = await anyio.to_thread.run_sync(authenticate, factory, settings.mcp_api_key)
        except Unauthorized as exc:
            raise Unauthorized(f"GEOSERVICE_MCP_API_KEY: {exc.detail}") from exc
        with factory.begin() as session:
            sync_tools(session, settings.analysis_plugins)
        log.info("MCP stdio server starting", user=principal.username)

        async def principal_of(_ctx: ServerRequestContext[Any, Any]) -> Principal:
            return await anyio.to_thread.run_sync(authenticate, factory, settings.mcp_api_key)

        server = build_server(McpAgent(AgentRuntime(settings, factory, client, queue), "mcp-stdio", principal_of))
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        queue.close()
        client.close()
        engine.dispose()
