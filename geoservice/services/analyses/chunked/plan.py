"""Whether a task runs in chunks, and its plan: which features each chunk takes, where the output goes.

Strategies: ``map`` (one output row per input row: buffer, reproject) cuts the input in fid order, so each
chunk's output ids follow from its position and its attributes pass through as stored bytes; ``dissolve``
(buffer with dissolve) and ``overlay`` cut in Hilbert order over the features' boxes (measured: an overlay
chunk then reads ~1.1x its own extent's worth of the other layer instead of all of it), and overlays whose
operation keeps parts of the overlay layer outside the input (union, update, xor) get overlay-side chunks too,
so those parts are made exactly once. Operations that declare ``chunking="map"`` (reproject, and plugins
that map features one by one) use ``map`` too. Anything else (inline inputs, other plugins, pairwise overlays,
layers in different CRSs, results the SuperMap surface does not keep) runs as one piece: the fast path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from geoservice.analysis.chunks import Cut, cut_chunks, hilbert_keys
from geoservice.analysis.crs import parse_crs
from geoservice.config import Settings
from geoservice.db import chunk_io
from geoservice.db.gis_io import partition_name
from geoservice.db.models import AnalysisPlan, Dataset
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.db.repositories import tasks as tasks_repo
from geoservice.iserver.payloads import output_policy
from geoservice.services import selection
from geoservice.services.analyses.prepare import Prepared

MAP, DISSOLVE, OVERLAY = "map", "dissolve", "overlay"
OVERLAY_SIDE_OPS = frozenset({"union", "update", "xor"})


@dataclass(frozen=True)
class Layout:
    """The selected features of a layer: ids (ascending), vertex counts, and boxes (spatial plans)."""

    fids: np.ndarray
    vertices: np.ndarray
    boxes: np.ndarray | None


def strategy_of(prepared: Prepared, supermap_request: Any) -> str | None:
    """How the request would be chunked (None: it runs as one piece)."""
    request, sources = prepared.request, prepared.sources
    if "input" not in sources or not output_policy(supermap_request)[0]:
        return None
    settings, op = request.settings, prepared.analysis_type
    if op == "buffer":
        return DISSOLVE if getattr(settings, "dissolve", False) or getattr(settings, "dissolve_by", None) else MAP
    if op != "overlay":
        return MAP if prepared.operation.chunking == "map" and list(request.inputs) == ["input"] else None
    if getattr(settings, "pairwise", False):
        return None
    overlay = sources.get("overlay")
    if overlay is None:  # inline overlay layer: every input chunk reads it whole
        return None if settings.operation in OVERLAY_SIDE_OPS else OVERLAY  # type: ignore[attr-defined]
    return OVERLAY if overlay.srid == sources["input"].srid else None


def plan(session: Session, settings: Settings, claim: tasks_repo.Claim, prepared: Prepared) -> int | None:
    """Split a claimed task into chunks and hand it over to them; return how many (None: run it as one piece).

    Writes the plan, the chunks and the empty staging table in the caller's transaction.
    """
    strategy = strategy_of(prepared, claim.supermap_request)
    if strategy is None or settings.chunk_features <= 0 or not _large(prepared, settings):
        return None
    source, ref = prepared.sources["input"], prepared.request.inputs["input"]
    spatial = strategy != MAP
    layout = _layout(session, source, ref.where, spatial)
    cuts = _cut(layout, settings, spatial)
    chunks = [_chunk(claim, seq, "input", layout, cut, settings) for seq, cut in enumerate(cuts)]
    if strategy == OVERLAY and prepared.request.settings.operation in OVERLAY_SIDE_OPS:  # type: ignore[attr-defined]
        other = prepared.sources["overlay"]
        side = _layout(session, other, prepared.request.inputs["overlay"].where, True)
        chunks += [_chunk(claim, len(chunks) + i, "overlay", side, cut, settings)
                   for i, cut in enumerate(_cut(side, settings, True))]
    if len(chunks) <= 1:
        return None
    dataset_id = uuid.uuid4()
    srid, crs = _output_crs(session, prepared, source)
    table = partition_name(dataset_id) if strategy == MAP else chunk_io.stage_name(claim.task_id)
    chunk_io.create_stage(session, table, keyed=strategy != MAP)
    chunks_repo.add_plan(session, AnalysisPlan(
        task_id=claim.task_id, strategy=strategy, result_dataset_id=dataset_id, stage_table=table, srid=srid,
        crs=crs, fields=selection.select_fields(source, ref.fields) if strategy == MAP else None,
        chunks_total=len(chunks), features_total=int(len(layout.fids)), vertices_total=int(layout.vertices.sum()),
        settings={"features": settings.chunk_features, "vertices": settings.chunk_vertices,
                  "order": "hilbert" if spatial else "fid"}), chunks)
    if not tasks_repo.fan_out(session, claim.task_id, claim.owner, len(chunks)):
        raise RuntimeError("the task's lease was lost while planning it")
    return len(chunks)


def _large(prepared: Prepared, settings: Settings) -> bool:
    """Cheap first look: could the input need more than one chunk?"""
    source = prepared.sources["input"]
    vertices = source.vertex_count if source.vertex_count is not None else settings.chunk_vertices + 1
    return source.feature_count > settings.chunk_features or vertices > settings.chunk_vertices


def _layout(session: Session, dataset: Dataset, where: dict[str, Any] | None, spatial: bool) -> Layout:
    if not spatial and where is None and dataset.vertex_count is not None and dataset.feature_count:
        # Cut in feature order: the ids come from the index alone, and every feature is assumed to have the
        # dataset's mean vertex count (reading every geometry to count its vertices costs more than it saves).
        fids = chunk_io.feature_ids(session, dataset.id)
        mean = max(dataset.vertex_count // dataset.feature_count, 1)
        return Layout(fids, np.full(len(fids), mean, np.int64), None)
    compiled = selection.compile_where(where, dataset) if where is not None else None
    fids, vertices, boxes = chunk_io.layout(session, dataset.id, spatial=spatial,
                                            where=compiled.where if compiled else None,
                                            params=compiled.params if compiled else None)
    if where is None and dataset.vertex_count is None:  # remember it for the next plan
        dataset_repo.set_vertex_count(session, dataset.id, int(vertices.sum()))
    return Layout(fids, vertices, boxes)


def _cut(layout: Layout, settings: Settings, spatial: bool) -> list[Cut]:
    order = None
    if spatial and layout.boxes is not None and len(layout.fids):
        centres = (layout.boxes[:, :2] + layout.boxes[:, 2:]) / 2
        order = np.argsort(hilbert_keys(centres[:, 0], centres[:, 1]), kind="stable")
    return cut_chunks(layout.vertices, max_features=settings.chunk_features, max_vertices=settings.chunk_vertices,
                      order=order)


def _chunk(claim: tasks_repo.Claim, seq: int, side: str, layout: Layout, cut: Cut, settings: Settings
           ) -> dict[str, Any]:
    positions = np.sort(cut.positions)
    bbox = None
    if layout.boxes is not None:
        boxes = layout.boxes[positions]
        bbox = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                float(boxes[:, 3].max())]
    return {"id": uuid.uuid4(), "task_id": claim.task_id, "owner_id": claim.created_by, "seq": seq, "side": side,
            "fids": layout.fids[positions].tolist(), "bbox": bbox, "feature_count": cut.features,
            "vertex_count": cut.vertices, "max_attempts": settings.task_max_attempts,
            # stamped now, not after the wake-ups are sent: an UPDATE then would lock every chunk while the
            # woken workers look for one (they skip locked rows, and would find none)
            "enqueued_at": datetime.now(UTC)}


def _output_crs(session: Session, prepared: Prepared, source: Dataset) -> tuple[int, str]:
    if hasattr(prepared.request.settings, "target_crs"):  # reproject (and plugins built on it)
        target = parse_crs(prepared.request.settings.target_crs, field="target_crs")  # type: ignore[attr-defined]
        return dataset_repo.resolve_srid(session, target)
    return source.srid, source.crs
