"""Refuse text PostgreSQL cannot store before any handler sees it: NUL characters and unpaired surrogates.

PostgreSQL's ``text`` and ``jsonb`` reject U+0000 and lone UTF-16 surrogates, so such a string in a dataset or
task name, a property value, a filter or a SuperMap body would otherwise reach the database and fail there
(a 500). This middleware checks query strings, and JSON bodies whose bytes contain such an escape, and answers
with the surface's own error body naming the field (``features[3].properties.name``): 400 for a query
parameter, 422 for a body field; iServer's ``{"succeed": false, "error": ...}`` under ``/iserver``.
Multipart uploads and the SuperMap form bodies are checked where they are parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geoservice.text import bad_text, find_bad_text

#: JSON escapes that decode to text PostgreSQL refuses (NUL, or a surrogate that may be unpaired).
_SUSPECT = re.compile(rb"\\u0000|\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
#: Largest JSON body checked here (larger ones are file-like imports, checked by their parser).
MAX_CHECKED_BYTES = 64 * 1024 * 1024


class InputGuardMiddleware:
    """Answer 400/422 for query parameters and JSON body fields holding text PostgreSQL cannot store."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = _query_problem(scope)
        if found:
            await _refuse(scope, send, 400, *found)
            return
        headers = dict(scope.get("headers") or [])
        # MCP speaks JSON-RPC: its tool arguments are checked by the tools (agents/validation.py)
        if b"json" not in headers.get(b"content-type", b"").lower() or scope.get("path", "").startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        body, messages = await _read(receive)
        if body is not None and _SUSPECT.search(body):
            found = _body_problem(body)
            if found:
                await _refuse(scope, send, 422, *found)
                return
        await self.app(scope, _replay(messages, receive), send)


def _query_problem(scope: Scope) -> tuple[str, str] | None:
    raw = scope.get("query_string") or b""
    if b"%00" not in raw and b"%ED" not in raw.upper():  # NUL, or a UTF-8 encoded surrogate (ED A0-BF ..)
        return None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="surrogateescape"):
        for text in (key, value):
            decoded = text.encode("latin-1").decode("utf-8", errors="surrogatepass")
            problem = bad_text(decoded)
            if problem:
                return f"query parameter {key}", problem
    return None


def _body_problem(body: bytes) -> tuple[str, str] | None:
    try:
        value = json.loads(body)  # the stdlib keeps lone surrogates (orjson refuses them outright)
    except ValueError:
        return None  # not JSON: the route reports it
    return find_bad_text(value)


async def _read(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """Read the whole body (up to ``MAX_CHECKED_BYTES``; beyond, stop buffering and return None)."""
    messages: list[Message] = []
    size, chunks = 0, []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), messages
        if size > MAX_CHECKED_BYTES:
            return None, messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(scope: Scope, send: Send, status: int, field: str, problem: str) -> None:
    if scope.get("path", "").startswith("/iserver"):
        status = 400
        payload: dict[str, Any] = {"succeed": False, "error": {"code": status, "errorMsg": f"{field}: {problem}"}}
    else:
        payload = {"error": "BadRequest" if status == 400 else "InvalidInput", "detail": f"{field}: {problem}",
                   "field": field.removeprefix("query parameter ")}
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
