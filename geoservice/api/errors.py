"""One error body for the native API: ``{"error": code, "detail": ..., "field"?, "feature"?}``.

Domain errors carry their own status; third-party exceptions map through ``STATUS_TABLE``;
anything else is a logged 500 with a generic message (no internals leak to clients).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pyproj.exceptions import CRSError
from sqlalchemy.exc import NoResultFound
from starlette.exceptions import HTTPException as StarletteHTTPException

from geoservice.errors import GeoserviceError
from geoservice.logging import get_logger

log = get_logger(__name__)

STATUS_TABLE: dict[type[Exception], tuple[int, str]] = {
    CRSError: (422, "UnknownCRS"),
    NoResultFound: (404, "NotFound"),
}


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def validation_body(errors: list[Any]) -> dict[str, Any]:
    """Turn pydantic errors into our body, naming the first field in ``field``."""
    items = [{"field": _loc(tuple(e.get("loc", ()))), "problem": e.get("msg", "")} for e in errors]
    detail = "; ".join(f"{i['field']}: {i['problem']}" for i in items[:5])
    return {"error": "ValidationError", "detail": detail, "field": items[0]["field"] if items else None,
            "errors": items}


def add_exception_handlers(app: FastAPI) -> None:
    """Install the handlers."""

    @app.exception_handler(GeoserviceError)
    async def _domain(_request: Request, exc: GeoserviceError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("service error", code=exc.code, detail=exc.detail)
        headers = {}
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return error_response(exc.status_code, exc.to_dict(), headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_body(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, {"error": code, "detail": str(exc.detail)},
                              headers=getattr(exc, "headers", None))

    for exc_type, (status, code) in STATUS_TABLE.items():

        async def _mapped(_request: Request, exc: Exception, status: int = status, code: str = code) -> JSONResponse:
            return error_response(status, {"error": code, "detail": str(exc)})

        app.add_exception_handler(exc_type, _mapped)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, method=request.method, exc_info=exc)
        return error_response(500, {"error": "InternalError", "detail": "internal error; see the server log"})
