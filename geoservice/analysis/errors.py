"""Errors raised by the pure analysis core: all are the user's input, never a server fault."""

from __future__ import annotations

from geoservice.errors import InvalidInput


class AnalysisInputError(InvalidInput):
    """Base of the errors an analysis raises because of its input."""

    code = "AnalysisInputError"


class MissingCRS(AnalysisInputError):
    code = "MissingCRS"


class UnknownCRS(AnalysisInputError):
    code = "UnknownCRS"


class EmptyInput(AnalysisInputError):
    code = "EmptyInput"


class InvalidGeometry(AnalysisInputError):
    code = "InvalidGeometry"


class UnsupportedGeometryType(AnalysisInputError):
    code = "UnsupportedGeometryType"


class TransformationUnavailable(AnalysisInputError):
    """The best transformation needs a grid that is not installed (and ballpark was not allowed)."""

    code = "TransformationUnavailable"
