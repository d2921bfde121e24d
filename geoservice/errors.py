"""One error hierarchy for the whole service.

Every error a user can cause is a ``GeoserviceError`` with an HTTP ``status_code`` and a
stable ``code``; the API turns it into ``{"error": code, "detail": ..., "field": ..., "feature": ...}``.
This module imports neither FastAPI nor Celery, so the analysis core and the workers raise the same
errors the API reports.
"""

from __future__ import annotations

from typing import Any


class GeoserviceError(Exception):
    """Base of every error the service reports to a client."""

    code = "InternalError"
    status_code = 500

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        feature: int | str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.feature = feature
        self.extra = extra or {}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON error body."""
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        if self.feature is not None:
            body["feature"] = self.feature
        body.update(self.extra)
        return body


class InvalidInput(GeoserviceError):
    """The request is well-formed but its content is wrong (422)."""

    code = "InvalidInput"
    status_code = 422


class BadRequest(GeoserviceError):
    """The request cannot be parsed at all (400)."""

    code = "BadRequest"
    status_code = 400


class Unauthorized(GeoserviceError):
    """No valid credentials (401)."""

    code = "Unauthorized"
    status_code = 401


class Forbidden(GeoserviceError):
    """Authenticated, but the caller's roles do not allow this (403)."""

    code = "Forbidden"
    status_code = 403


class NotFound(GeoserviceError):
    code = "NotFound"
    status_code = 404


class Conflict(GeoserviceError):
    code = "Conflict"
    status_code = 409


class PayloadTooLarge(GeoserviceError):
    code = "PayloadTooLarge"
    status_code = 413


class UnsupportedMediaType(GeoserviceError):
    code = "UnsupportedMediaType"
    status_code = 415


class ServiceUnavailable(GeoserviceError):
    code = "ServiceUnavailable"
    status_code = 503
