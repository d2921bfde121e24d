"""Text PostgreSQL cannot store: NUL characters and unpaired UTF-16 surrogates (``text`` and ``jsonb`` refuse
both). Every place client text enters checks it with these, so it is refused with the field's name instead of
failing in the database."""

from __future__ import annotations

from typing import Any


def bad_text(value: str) -> str | None:
    """Why ``value`` cannot be stored (None when it can)."""
    if "\x00" in value:
        return "NUL characters (\\u0000) are not allowed"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "unpaired UTF-16 surrogates are not allowed"
    return None


def find_bad_text(obj: Any, path: str = "") -> tuple[str, str] | None:
    """The first string (or key) in a JSON value that cannot be stored: ``(field path, problem)``."""
    if isinstance(obj, str):
        problem = bad_text(obj)
        return (path or "body", problem) if problem else None
    if isinstance(obj, dict):
        for key, value in obj.items():
            problem = bad_text(str(key))
            if problem:  # the key itself cannot be shown as it is: name its parent, and the key escaped
                shown = str(key).encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
                return path or "body", f"key {shown!r}: {problem}"
            where = f"{path}.{key}" if path else str(key)
            found = find_bad_text(value, where)
            if found:
                return found
    if isinstance(obj, list):
        for i, value in enumerate(obj):
            found = find_bad_text(value, f"{path}[{i}]")
            if found:
                return found
    return None
