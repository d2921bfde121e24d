"""Running one chunk: read only its rows, compute, and write its output into the staging table.

``load`` reads the chunk's features (and, for an overlay, the other layer's features whose boxes touch the
chunk's extent); ``compute`` runs the operation on them (the registry's, or the overlay restricted to the
chunk's side); ``write`` stores the output with binary COPY in the transaction that marks the chunk
successful, so a chunk's rows are committed once or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from sqlalchemy import text
from sqlalchemy.orm import Session

from geoservice.analysis import summarised
from geoservice.analysis.base import AnalysisOutput, ProgressFn, layer
from geoservice.analysis.overlay import overlay_keyed
from geoservice.analysis.validation import geometry_family, validate_geometries
from geoservice.db import chunk_io, gis_io
from geoservice.db.models import Dataset
from geoservice.db.repositories.chunks import ChunkClaim
from geoservice.services import datasets as dataset_service
from geoservice.services import selection
from geoservice.services.analyses.chunked.plan import DISSOLVE, MAP, OVERLAY
from geoservice.services.analyses.inline_input import inline_layer
from geoservice.services.analyses.prepare import Prepared
from geoservice.services.analyses.running import compute as run_operation


@dataclass
class Loaded:
    """A chunk's inputs: the layers, and the rows whose attributes pass through unchanged (map plans)."""

    layers: dict[str, GeoDataFrame]
    rows: chunk_io.Rows | None = None


@dataclass
class Output:
    """A chunk's computed output, and the source keys of overlay pieces."""

    result: AnalysisOutput
    keys: tuple[np.ndarray, np.ndarray] | None = None


def load(session: Session, claim: ChunkClaim, prepared: Prepared) -> Loaded:
    """Read the chunk's features (only its rows) and what it is computed against."""
    strategy, request = claim.plan.strategy, prepared.request
    source, ref = prepared.sources["input"], request.inputs["input"]
    crs = dataset_service.dataset_crs(source)
    if strategy == MAP:  # attributes are not needed: they are copied back as stored
        rows = chunk_io.read_rows(session, source.id, fids=claim.fids, raw=True, keys=ref.fields)
        return Loaded({"input": layer(rows.geometries(), crs)}, rows)
    if strategy == DISSOLVE:
        key = getattr(request.settings, "dissolve_by", None)
        return Loaded({"input": _read(session, source, claim.fids, None, [key] if key else [])})
    overlay_ref = request.inputs["overlay"]
    if claim.side == "input":
        inputs = _read(session, source, claim.fids, None, ref.fields, where=ref.where)
        other = prepared.sources.get("overlay")
        overlay = (_read(session, other, None, claim.bbox, overlay_ref.fields, where=overlay_ref.where)
                   if other is not None else _positional(inline_layer(overlay_ref, "overlay")))
        return Loaded({"input": inputs, "overlay": overlay})
    other = prepared.sources["overlay"]
    overlay = _read(session, other, claim.fids, None, overlay_ref.fields, where=overlay_ref.where)
    inputs = _read(session, source, None, claim.bbox, ref.fields, where=ref.where)
    return Loaded({"input": inputs, "overlay": overlay})


def _read(session: Session, dataset: Dataset, fids: list[int] | None, bbox: list[float] | None,
          keys: list[str] | None, where: dict[str, Any] | None = None) -> GeoDataFrame:
    """Features (decoded, typed as the dataset records them) indexed by fid."""
    fields = selection.select_fields(dataset, keys)
    compiled = selection.compile_where(where, dataset) if where is not None and fids is None else None
    rows = chunk_io.read_rows(session, dataset.id, fids=fids, bbox=bbox, srid=dataset.srid, raw=False,
                              keys=[f["name"] for f in fields], where=compiled.where if compiled else None,
                              params=compiled.params if compiled else None)
    gdf, _ = gis_io.frame_from_rows(list(zip(rows.fids.tolist(), rows.wkb, rows.attributes, strict=True)),
                                    dataset_service.dataset_crs(dataset), fields)
    return gdf


def _positional(gdf: GeoDataFrame) -> GeoDataFrame:
    return gdf.set_axis(pd.RangeIndex(1, len(gdf) + 1), axis=0)  # inline features: ids 1..n


def compute(claim: ChunkClaim, prepared: Prepared, loaded: Loaded, progress: ProgressFn) -> Output:
    """The operation on the chunk (an overlay chunk makes only the pieces of its own side's features)."""
    if claim.plan.strategy != OVERLAY:
        return Output(run_operation(prepared.request, loaded.layers, progress))
    output, keys_a, keys_b = overlay_keyed(loaded.layers["input"], loaded.layers["overlay"],
                                           prepared.request.settings,  # type: ignore[arg-type]
                                           progress, sides=frozenset({claim.side}))
    return Output(summarised(output), (keys_a, keys_b))


def write(session: Session, claim: ChunkClaim, loaded: Loaded, output: Output) -> tuple[int, dict[str, Any]]:
    """COPY the chunk's output into the staging table; return its row count and its share of the summary."""
    plan, gdf = claim.plan, output.result.gdf
    valid, repaired = validate_geometries(gdf.reset_index(drop=True), make_valid=True, allow_mixed=True)
    geoms = np.asarray(valid.geometry.array, dtype=object)
    if plan.strategy == MAP:
        assert loaded.rows is not None
        kept = np.asarray(gdf.index, dtype=np.intp)  # positions of the input rows that have an output
        first = _rank(session, claim)
        fids = first + kept + 1  # what a single run numbers them: their rank among the selected features
        attrs = [loaded.rows.attributes[i] for i in kept]
        names = [loaded.rows.names[i] for i in kept]
        keys = None
    else:
        fids = np.zeros(len(valid), np.int64)  # numbered at finalisation
        attrs = gis_io.attribute_records(valid)
        names = list(gis_io.feature_names(valid))
        keys = output.keys
    count = chunk_io.copy_rows(session, plan.stage_table, plan.result_dataset_id, fids, geoms, attrs, names,
                               srid=plan.srid, crs_label=plan.crs, keys=keys)
    return count, _summary(valid, output.result, repaired, plan.strategy != MAP)


def _rank(session: Session, claim: ChunkClaim) -> int:
    """How many selected features come before this chunk (map plans cut in fid order)."""
    return int(session.execute(text("SELECT coalesce(sum(feature_count), 0) FROM analysis_chunks "
                                    "WHERE task_id = :t AND seq < :s"), {"t": claim.task_id, "s": claim.seq}).scalar())


def _summary(valid: GeoDataFrame, result: AnalysisOutput, repaired: list[Any], infer: bool) -> dict[str, Any]:
    geoms = np.asarray(valid.geometry.array, dtype=object)
    bounds = [float(v) for v in shapely.total_bounds(geoms)] if len(valid) else None
    summary: dict[str, Any] = {
        "count": len(valid), "extent": bounds if bounds and np.isfinite(bounds).all() else None,
        "family": geometry_family(valid, allow_mixed=True) if len(valid) else "Unknown",
        "vertices": int(shapely.get_num_coordinates(geoms).sum()), "repaired": len(repaired),
        "metadata": orjson.loads(orjson.dumps(result.metadata, default=str,
                                              option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)),
    }
    if infer:  # attributes made by the operation: their types, as a single run would infer them
        summary["fields"] = dataset_service.infer_fields(valid, unknown=None)
    return summary
