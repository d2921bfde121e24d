"""The pure analysis core: GeoDataFrame + params -> GeoDataFrame (+ metadata).

Rules (enforced by the import-linter contract in pyproject.toml): no database, HTTP, Celery, settings
or file I/O here; never import sqlalchemy, celery, fastapi, geoservice.db, geoservice.api or tasks.
Every operation states its units and CRS, takes an optional ``progress(fraction, phase)`` callback,
and is registered in the frozen ``OPERATIONS`` registry, which the API uses to validate task
parameters with the same params model the worker uses. A params model holds the algorithm's settings;
``request`` adds what a caller asks: the input layers (by reference) and the output name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geopandas import GeoDataFrame

# Modules, not functions: binding a function named like its module would shadow the submodule.
from geoservice.analysis import buffer as _buffer
from geoservice.analysis import overlay as _overlay
from geoservice.analysis import reproject as _reproject
from geoservice.analysis.base import AnalysisOutput, ProgressFn
from geoservice.analysis.buffer import BufferParams
from geoservice.analysis.overlay import OverlayParams
from geoservice.analysis.registry import Operation, Registry
from geoservice.analysis.reproject import ReprojectParams
from geoservice.analysis.summary import geodesic_summary


def summarised(output: AnalysisOutput) -> AnalysisOutput:
    """Add the shared layer summary (count, extent, geodesic area/length) to the metadata."""
    if not len(output.gdf):
        summary: dict[str, Any] = {"feature_count": 0}
    elif output.gdf.crs is None:  # coordinates without a CRS (``unit="crs"`` buffers): no geodesic measures
        summary = {"feature_count": len(output.gdf), "extent": list(map(float, output.gdf.total_bounds))}
    else:
        summary = geodesic_summary(output.gdf)
    return AnalysisOutput(output.gdf, {**summary, **output.metadata})


def _run_reproject(layers: Mapping[str, GeoDataFrame], params: Any, progress: ProgressFn) -> AnalysisOutput:
    return _reproject.reproject(layers["input"], params, progress)


def _run_buffer(layers: Mapping[str, GeoDataFrame], params: Any, progress: ProgressFn) -> AnalysisOutput:
    return summarised(_buffer.buffer(layers["input"], params, progress))


def _run_overlay(layers: Mapping[str, GeoDataFrame], params: Any, progress: ProgressFn) -> AnalysisOutput:
    return summarised(_overlay.overlay(layers["input"], layers["overlay"], params, progress))


OPERATIONS: Registry = (
    Registry()
    .with_operation(Operation("reproject", "Reproject a layer to another CRS", ReprojectParams, ("input",),
                              _run_reproject, chunking="map"))
    .with_operation(Operation("buffer", "Buffer features by a distance with units", BufferParams, ("input",),
                              _run_buffer, field_refs=(("dissolve_by", "input"),)))
    .with_operation(Operation("overlay", "Overlay a layer with polygons (intersect, clip, erase, identity, union, "
                              "update, xor)", OverlayParams, ("input", "overlay"), _run_overlay,
                              field_refs=(("input_fields", "input"), ("overlay_fields", "overlay"))))
)

__all__ = ["OPERATIONS", "AnalysisOutput", "Operation", "ProgressFn", "Registry", "summarised"]
