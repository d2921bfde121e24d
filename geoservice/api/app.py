"""App factory; the lifespan owns the engine, the session factory and the Redis client."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import redis
from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from geoservice import __version__
from geoservice.agents.mcp_http import McpEndpoint, agent_layer
from geoservice.agents.tool_runs import AgentRuntime
from geoservice.api.errors import add_exception_handlers
from geoservice.api.input_guard import InputGuardMiddleware
from geoservice.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from geoservice.api.routers import api_router, health
from geoservice.api.routers import auth as auth_routes
from geoservice.api.routers import supermap as supermap_routes
from geoservice.api.schemas.tasks import task_create_schemas
from geoservice.config import Settings, get_settings
from geoservice.db.engine import make_engine, make_sessionmaker
from geoservice.logging import configure_logging
from geoservice.queue import CeleryTaskQueue, TaskQueue
from geoservice.services import analyses


class State(TypedDict):
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    redis: redis.Redis
    queue: TaskQueue
    mcp: StreamableHTTPSessionManager  # agents' MCP over streamable HTTP (issue #7), one per lifespan run
    db_slots: asyncio.Semaphore  # requests holding a database session at once (see api/deps.db_slot)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[State]:
        engine = make_engine(settings, "api")
        factory = make_sessionmaker(engine)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=30)
        queue = CeleryTaskQueue(settings)
        try:
            async with agent_layer(AgentRuntime(settings, factory, client, queue)) as mcp_sessions:
                # Everything loaded at start-up (GeoPandas, pyproj, pydantic models: millions of objects) is
                # kept out of the garbage collector's full passes, which otherwise cost every request.
                gc.freeze()
                yield State(settings=settings, engine=engine, sessionmaker=factory, redis=client, queue=queue,
                            mcp=mcp_sessions,
                            db_slots=asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow))
        finally:
            queue.close()
            client.close()
            engine.dispose()

    app = FastAPI(
        title="geoservice",
        version=__version__,
        description="Geospatial analysis processing: PostGIS datasets; buffer, overlay and reprojection tasks.",
        lifespan=lifespan,
    )
    add_exception_handlers(app)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(InputGuardMiddleware)  # inside the body limit: it reads JSON bodies whole
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.include_router(health.router)
    app.include_router(api_router, prefix="/api/v1")
    app.include_router(auth_routes.iserver_router)
    app.include_router(supermap_routes.router)  # last: it ends with the /iserver catch-all
    app.add_route("/mcp", McpEndpoint(), include_in_schema=False)  # MCP streamable HTTP; API key (issue #7)
    _document_task_bodies(app, settings)
    return app


def _document_task_bodies(app: FastAPI, settings: Settings) -> None:
    """Put ``TaskCreate`` for the registry in force (built-in operations and configured plugins) in the
    OpenAPI document, where ``POST /api/v1/tasks`` refers to it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                task_create_schemas(analyses.registry(settings.analysis_plugins)))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
