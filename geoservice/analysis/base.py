"""Shared types of the pure analysis core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from geopandas import GeoDataFrame

#: Progress callback: ``progress(fraction_0_to_1, phase_message)``. Never raises into the analysis.
ProgressFn = Callable[[float, str], None]


def no_progress(_fraction: float, _message: str) -> None:
    """Progress sink used when the caller passes none."""


@dataclass(frozen=True)
class AnalysisOutput:
    """What every analysis returns: the output layer (with its CRS set) and metadata for the result row."""

    gdf: GeoDataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
