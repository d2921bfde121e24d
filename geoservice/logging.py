"""Structured logging with structlog (JSON in production, console in dev)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

#: Credentials that must never reach a log line: URL parameters (``?token=``, ``key``, ``access_token``) and
#: ``Bearer`` / ``X-API-Key`` values that code or a client put in a message.
_SECRET = re.compile(r"((?:[?&;](?:token|access_token|key|api_key)=)|(?:Bearer\s+)|(?:X-API-Key:\s*))([^&\s\"',;]+)",
                     re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any credential value replaced by ``[REDACTED]``."""
    return _SECRET.sub(r"\1[REDACTED]", text)


class RedactSecrets(logging.Filter):
    """Redact credentials from every record (uvicorn's access log writes full URLs, query included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg, record.args = record.getMessage(), None
            except (TypeError, ValueError):
                return True
        if isinstance(record.msg, str) and _SECRET.search(record.msg):
            record.msg = redact(record.msg)
        return True


def _redact_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and _SECRET.search(value):
            event[key] = redact(value)
    return event


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Route stdlib and structlog output through one structured renderer."""
    shared: list[structlog.types.Processor] = [
        _redact_event,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structured logger."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
