"""HTTP plumbing of the SuperMap surface: iServer's error body for every error, CORS, the catch-all.

The iClient ignores HTTP status codes and looks only at the body (shared/reference/supermap-rest.md
section 5), so every error under ``/iserver`` (unknown route, wrong method, validation, auth, 500) must be
``{"succeed": false, "error": {"code": N, "errorMsg": "..."}}`` with ``N`` the HTTP status. This is done
inside the SuperMap router (a route class whose handler converts errors, plus a catch-all route), so the
native API's error shape is untouched. Client-input errors are 400, iServer's "bad parameters" (the
native API's 422 has no iServer counterpart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pyproj.exceptions import CRSError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from geoservice.api.errors import validation_body
from geoservice.errors import GeoserviceError
from geoservice.iserver.results import error_body
from geoservice.logging import get_logger

log = get_logger(__name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
_HTTP_MESSAGES = {404: "the resource does not exist", 405: "method not allowed"}


def status_and_message(exc: Exception) -> tuple[int, str]:
    """Map any exception to an HTTP status and a clear message for iServer's error body."""
    if isinstance(exc, GeoserviceError):
        return (400 if exc.status_code == 422 else exc.status_code), exc.detail
    if isinstance(exc, RequestValidationError):
        return 400, validation_body(list(exc.errors()))["detail"]
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail or _HTTP_MESSAGES.get(exc.status_code, "HTTP error"))
    if isinstance(exc, CRSError):
        return 400, str(exc)
    return 500, "internal error; see the server log"


def error_response(request: Request, exc: Exception) -> JSONResponse:
    status, message = status_and_message(exc)
    if status >= 500:
        log.error("supermap request failed", path=request.url.path, method=request.method, exc_info=exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, GeoserviceError) and "retry_after" in exc.extra:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)
    return OrjsonResponse(error_body(status, message), status_code=status, headers=headers or None)


def add_cors(request: Request, response: Response) -> None:
    """Allow browser clients on other origins (the iClient posts CORS "simple" requests, no credentials)."""
    if "origin" in request.headers:
        response.headers["Access-Control-Allow-Origin"] = "*"


class SupermapRoute(APIRoute):
    """A route whose every error (dependencies and body validation included) is iServer's error body."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:  # every error becomes iServer's body
                response = error_response(request, exc)
            add_cors(request, response)
            return response

        return handle


def _iserver_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's routes under ``/iserver`` (inside included routers too), except the catch-all."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI keeps included routers as a branch
        if inner is not None:
            yield from _iserver_routes(inner.routes)
        elif isinstance(route, APIRoute) and route.path.startswith("/iserver") and route.endpoint is not catch_all:
            yield route


def _allowed_methods(request: Request) -> set[str]:
    """Methods of the other routes whose path matches this request (for a 405 instead of a 404)."""
    allowed: set[str] = set()
    probe = {**request.scope, "method": "\x00"}  # no route accepts it: a path match is PARTIAL
    for route in _iserver_routes(request.app.router.routes):
        match, _ = route.matches(probe)
        if match is not Match.NONE:
            allowed |= set(route.methods or ())
    return allowed


async def catch_all(request: Request, path: str) -> Response:  # noqa: ARG001 - path is the route's parameter
    """Unknown ``/iserver`` resources (404), known ones with another method (405), and CORS preflights."""
    allowed = _allowed_methods(request)
    if request.method == "OPTIONS":
        requested = request.headers.get("access-control-request-headers", "content-type")
        methods = ", ".join(sorted(allowed | {"OPTIONS"})) if allowed else "GET, POST, OPTIONS"
        return Response(status_code=204, headers={"Access-Control-Allow-Origin": "*",
                                                  "Access-Control-Allow-Methods": methods,
                                                  "Access-Control-Allow-Headers": requested,
                                                  "Access-Control-Max-Age": "600"})
    if allowed:
        exc: Exception = StarletteHTTPException(
            405, f"method {request.method} is not allowed on {request.url.path}; use {', '.join(sorted(allowed))}",
            headers={"Allow": ", ".join(sorted(allowed))})
    else:
        exc = StarletteHTTPException(404, f"the resource {request.url.path} does not exist")
    return error_response(request, exc)


class OrjsonResponse(JSONResponse):
    """JSON with orjson (results can hold many thousands of vertices)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
