"""Request bodies of the SuperMap surface: the iClient's JSON-like text, and strict JSON.

The real iClient (``Util.toJSON``, see shared/reference/supermap-rest.md section 5) posts
``Content-Type: application/x-www-form-urlencoded`` with a body that is not JSON: object keys are
single-quoted, string values double-quoted, and every string value is escaped by the client (the
first ``<`` becomes ``&lt;``, the first ``>`` ``&gt;``, then ``%`` becomes ``%25`` and ``&`` ``%26``).
``parse_body`` reads both that and strict JSON (iserver-cli, curl) into plain Python values, undoing
the client's escaping of string values when the body came form-encoded. The result is what a task
stores as its ``supermap_request`` body (strict JSON).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from geoservice.errors import BadRequest
from geoservice.text import find_bad_text

#: One lexical piece of the JSON-like text: a double- or single-quoted string, a number (``1e-10`` must not
#: read as ``1`` and the word ``e``), a bare word, a run of anything else (punctuation, signs, spaces), or a
#: stray character (an unterminated string).
_TOKEN = re.compile(
    r"""(?P<dq>"(?:[^"\\]|\\.)*")|(?P<sq>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)"""
    r"""|(?P<word>[A-Za-z_$][\w$]*)|(?P<other>[^"'A-Za-z_$0-9]+)|(?P<bad>.)""",
    re.S,
)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_KEY_FOLLOWS = re.compile(r"\s*:")
_LITERALS = {"true", "false", "null"}
_NON_FINITE = {"NaN", "Infinity", "undefined"}  # what JavaScript may leave in hand-built bodies
#: Text that may decode to characters PostgreSQL cannot store (NUL, lone surrogates; also %-escaped).
_SUSPECT = re.compile(r"\x00|\\u0000|\\u[dD][89a-fA-F]|%00|[\ud800-\udfff]")


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """Parse a request body into Python values (dicts, lists, str, float/int, bool, None).

    Args:
        raw: the body bytes (UTF-8).
        content_type: the request's Content-Type; anything but ``application/json`` (in practice the
            iClient's ``application/x-www-form-urlencoded``) means string values carry the iClient's
            escaping, which is undone.

    Raises:
        BadRequest: the body is empty, not UTF-8, or neither JSON nor the iClient's JSON-like text.
    """
    try:
        text = raw.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text:
        raise BadRequest("the request body is empty; send the analysis parameters as JSON")
    if text[0] not in "{[":
        raise BadRequest("the request body is not JSON: it must be an object ({...}) or an array ([...])")
    escaped = not _is_json(content_type)
    try:
        value = orjson.loads(text)  # strict JSON: the fast path (iserver-cli, curl)
    except orjson.JSONDecodeError:
        value = _lenient(text, escaped)
    else:
        value = unescape_values(value) if escaped else value
    found = find_bad_text(value) if _SUSPECT.search(text) else None  # (walk big bodies only when needed)
    if found:
        raise BadRequest(f"{found[0]}: {found[1]}")
    return value


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _lenient(text: str, escaped: bool) -> Any:
    """Rewrite the JSON-like text as strict JSON (quoting keys, re-encoding strings), then parse it."""
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind in ("dq", "sq"):
            is_key = _KEY_FOLLOWS.match(text, match.end()) is not None
            value = _decode_string(token[1:-1], match.start())
            out.append(orjson.dumps(value if is_key or not escaped else unescape(value)).decode())
        elif kind == "word":
            out.append(_word(token, text, match))
        elif kind == "num":
            out.append(token)
        elif kind == "other":
            out.append(_TRAILING_COMMA.sub(r"\1", token))
        else:
            raise BadRequest(f"the request body is not valid JSON: unterminated string at character {match.start()}")
    strict = _TRAILING_COMMA.sub(r"\1", "".join(out))
    try:
        return orjson.loads(strict)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc.msg})") from None


def _word(token: str, text: str, match: re.Match[str]) -> str:
    if _KEY_FOLLOWS.match(text, match.end()):
        return orjson.dumps(token).decode()  # a bare key: {key: 1}
    if token in _LITERALS:
        return token
    if token in _NON_FINITE:
        return "null"
    raise BadRequest(f"the request body is not valid JSON: unexpected word {token!r} at character {match.start()}")


def _decode_string(body: str, where: int) -> str:
    """Decode backslash escapes (JSON's, plus ``\\'``); raw control characters are kept as they are."""
    if "\\" not in body:
        return body

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] == "u" and len(code) == 5:
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    decoded = _ESCAPE.sub(one, body)
    try:
        # Join surrogate pairs written as two \u escapes (emoji and other astral characters).
        return decoded.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise BadRequest(f"the request body has a broken \\u escape in the string at character {where}") from None


def unescape(value: str) -> str:
    """Undo the iClient's escaping of one string value (in the reverse order of ``Util.toJSON``)."""
    if "%" not in value and "&" not in value:
        return value
    return value.replace("%26", "&").replace("%25", "%").replace("&lt;", "<").replace("&gt;", ">")


def unescape_values(value: Any) -> Any:
    """Apply ``unescape`` to every string value (not to object keys) of a parsed body."""
    if isinstance(value, str):
        return unescape(value)
    if isinstance(value, list):
        return [unescape_values(v) for v in value]
    if isinstance(value, dict):
        return {k: unescape_values(v) for k, v in value.items()}
    return value
