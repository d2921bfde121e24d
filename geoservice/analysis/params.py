"""Parameter pieces shared by several analyses (each analysis module defines its own params model).

The same models validate ``POST /api/v1/tasks`` bodies in the API and the task in the worker.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Base for params models: unknown keys are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputRef(StrictModel):
    """An analysis input: a stored dataset, or inline GeoJSON (a FeatureCollection, Feature or geometry).

    Inline GeoJSON is CRS84 (RFC 7946) unless ``crs`` says otherwise.
    """

    dataset_id: UUID | None = None
    geojson: dict[str, Any] | None = None
    crs: str | None = Field(default=None, description="CRS of inline GeoJSON; default OGC:CRS84")
    # Feature selection of a dataset input (issue #5): a filter tree (geoservice.supermap.filters),
    # compiled to a parameterised query when the worker loads the input; and the attributes to load.
    where: dict[str, Any] | None = Field(default=None, description="dataset inputs only: features to use")
    fields: list[str] | None = Field(default=None, description="dataset inputs only: attributes to load")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.dataset_id is None) == (self.geojson is None):
            raise ValueError("give exactly one of 'dataset_id' or 'geojson'")
        if self.crs is not None and self.dataset_id is not None:
            raise ValueError("'crs' applies to inline 'geojson' only; a dataset has its own CRS")
        if (self.where is not None or self.fields is not None) and self.dataset_id is None:
            raise ValueError("'where' and 'fields' apply to dataset inputs only")
        return self


class LengthUnit(StrEnum):
    m = "m"
    km = "km"
    mi = "mi"
    ft = "ft"
    nmi = "nmi"
    degrees = "degrees"


#: Metres per unit; ``degrees`` is angular and has no fixed length.
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
        if self.unit is LengthUnit.degrees:
            raise ValueError("a distance in degrees has no length in metres")
        return self.value * METRES_PER_UNIT[self.unit]
