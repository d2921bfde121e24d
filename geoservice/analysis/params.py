"""Parameter pieces shared by several analyses (each analysis module defines its own params model).

A params model holds the algorithm's own settings only; the input layers and the output name belong to
the request (``geoservice.analysis.request``). The same models validate ``POST /api/v1/tasks`` bodies in
the API, agents' tool calls and the task in the worker.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """Base for params models: unknown keys are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LengthUnit(StrEnum):
    m = "m"
    km = "km"
    mi = "mi"
    ft = "ft"
    nmi = "nmi"
    degrees = "degrees"
    #: The units of the layer's own CRS, applied planar: what PostGIS ``ST_Buffer(geometry, value)`` does
    #: (degrees for lon/lat data, the axis unit of a projected CRS). The only unit for data without a CRS.
    crs = "crs"


#: Metres per unit; ``degrees`` is angular and ``crs`` depends on the data, so neither has a fixed length.
METRES_PER_UNIT: dict[LengthUnit, float] = {
    LengthUnit.m: 1.0,
    LengthUnit.km: 1000.0,
    LengthUnit.mi: 1609.344,
    LengthUnit.ft: 0.3048,
    LengthUnit.nmi: 1852.0,
}


class Distance(StrictModel):
    """A distance with its unit, e.g. ``{"value": 500, "unit": "m"}``."""

    value: float
    unit: LengthUnit

    @model_validator(mode="after")
    def _finite(self) -> Self:
        if not math.isfinite(self.value):
            raise ValueError("distance value must be a finite number")
        return self

    def metres(self) -> float:
        """Return the distance in metres (not defined for degrees)."""
        if self.unit not in METRES_PER_UNIT:
            raise ValueError(f"a distance in {self.unit.value} has no fixed length in metres")
        return self.value * METRES_PER_UNIT[self.unit]
