"""Finalising a chunked task: the result becomes visible in one transaction.

Under the task's lease: reduce (dissolve: the union of the chunks' partial unions per group) or number the
pieces (overlay) or renumber (a map whose output dropped features), index the partition once and attach it,
insert the dataset and result rows with the chunks' summaries added up, and mark the task successful. A
reader never sees half a result; a failed or dismissed task's staging table is dropped by the housekeeper.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from sqlalchemy.orm import Session

from geoservice.analysis.base import AnalysisOutput
from geoservice.db import chunk_io, gis_io
from geoservice.db.models import AnalysisPlan, Dataset
from geoservice.db.repositories import chunks as chunks_repo
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.db.repositories import tasks as tasks_repo
from geoservice.iserver import payloads
from geoservice.services import datasets as dataset_service
from geoservice.services.analyses.chunked.plan import DISSOLVE, MAP
from geoservice.services.analyses.prepare import Prepared
from geoservice.services.analyses.running import Recorded, add_result_row, record_result, recordset_rows

SUMMED = ("feature_count", "input_feature_count", "dropped_empty", "geodesic_area_m2", "geodesic_length_m")
SUMMED_DICTS = ("strategy_counts", "piece_counts", "repaired_invalid")


def finalise(session: Session, claim: tasks_repo.Claim, prepared: Prepared) -> bool:
    """Publish a chunked task's result; False when the lease was lost (nothing is written)."""
    if tasks_repo.lock_if_holding(session, claim.task_id, claim.owner) is None:
        return False
    plan = chunks_repo.get_plan(session, claim.task_id)
    assert plan is not None
    outputs = chunks_repo.outputs(session, claim.task_id)
    summaries = [s for _, _, _, s in outputs]
    metadata = merge_metadata(summaries, len(outputs))
    if plan.strategy == DISSOLVE:
        recorded = _reduce(session, claim, prepared, plan, metadata)
    else:
        dataset = _publish(session, claim, prepared, plan, summaries, sum(n for _, _, n, _ in outputs))
        recorded = _recorded(session, claim, dataset, metadata)
    add_result_row(session, claim.task_id, recorded)
    chunks_repo.mark_finalised(session, claim.task_id)
    return tasks_repo.succeed(session, claim.task_id, claim.owner, supermap_result=recorded.supermap_result,
                              result_dataset_id=recorded.dataset.id if recorded.dataset else None)


def _publish(session: Session, claim: tasks_repo.Claim, prepared: Prepared, plan: AnalysisPlan,
             summaries: list[dict[str, Any]], rows: int) -> Dataset:
    """Index and attach the staged rows as the result dataset's partition, and insert the dataset row."""
    name = dataset_service.check_name(session, claim.created_by, _name(claim, prepared))
    if plan.strategy == MAP:
        if rows < plan.features_total:  # features were dropped (empty results): number 1..n as a single run
            chunk_io.renumber(session, plan.result_dataset_id)
        fields = list(plan.fields or [])
    else:
        chunk_io.number_pieces(session, plan.stage_table, plan.result_dataset_id)
        fields = merge_fields(s.get("fields") or [] for s in summaries)
    extent = merge_extent(s.get("extent") for s in summaries)
    dataset = dataset_repo.add(
        session, id=plan.result_dataset_id, name=name, owner_id=claim.created_by, srid=plan.srid, crs=plan.crs,
        geometry_type=merge_family(s.get("family", "Unknown") for s in summaries), feature_count=rows,
        vertex_count=sum(int(s.get("vertices", 0)) for s in summaries), extent=extent,
        extent_crs84=dataset_service.bounds_crs84(dataset_service.dataset_crs_of(plan.crs), extent), fields=fields,
        source={"task_id": str(claim.task_id), "analysis_type": claim.analysis_type})
    gis_io.index_and_attach(session, plan.result_dataset_id, plan.srid)
    return dataset


def _recorded(session: Session, claim: tasks_repo.Claim, dataset: Dataset, metadata: dict[str, Any]) -> Recorded:
    _, limit = payloads.output_policy(claim.supermap_request)
    rows = recordset_rows(session, None, dataset, limit) if limit else None
    result = None if claim.supermap_request is None else payloads.task_result(
        claim.supermap_request, dataset_name=dataset.name, recordset=rows)
    measures = {k: metadata[k] for k in ("geodesic_area_m2", "geodesic_length_m") if k in metadata}
    data = {"dataset_id": str(dataset.id), "dataset_name": dataset.name, "feature_count": dataset.feature_count,
            "extent": dataset.extent, "extent_crs84": dataset.extent_crs84, "crs": dataset.crs,
            "geometry_type": dataset.geometry_type, **measures}
    return Recorded(dataset, data, {**metadata, "attempt": claim.attempt}, result)


def _reduce(session: Session, claim: tasks_repo.Claim, prepared: Prepared, plan: AnalysisPlan,
            metadata: dict[str, Any]) -> Recorded:
    """Dissolve: union the chunks' partial unions per group, then store it as a single run would."""
    source = prepared.sources["input"]
    key = getattr(prepared.request.settings, "dissolve_by", None)
    rows = chunk_io.read_rows(session, plan.result_dataset_id, raw=False, table=plan.stage_table)
    geoms = rows.geometries()
    frame = pd.DataFrame.from_records([a or {} for a in rows.attributes], columns=[*([key] if key else []),
                                                                                   "feature_count"])
    if key:
        frame = gis_io.restore_types(frame, [f for f in source.fields if f["name"] == key])
        groups = frame[key].groupby(frame[key], dropna=False, sort=True).indices
        parts = list(groups.values())
        attrs = pd.DataFrame({key: [frame[key].iloc[p[0]] for p in parts]})
    else:
        parts = [np.arange(len(frame))]
        attrs = pd.DataFrame(index=range(1))
    attrs["feature_count"] = [int(frame["feature_count"].iloc[p].sum()) for p in parts]
    merged = [shapely.union_all(geoms[p]) for p in parts]
    gdf = GeoDataFrame(attrs, geometry=merged, crs=dataset_service.dataset_crs_of(plan.crs))
    chunk_io.drop_stage(session, plan.stage_table)
    metadata = {**metadata, "feature_count": len(gdf)}
    return record_result(session, claim.task_id, claim.created_by, prepared, AnalysisOutput(gdf, metadata),
                         store=True, record=claim.supermap_request,
                         recordset_limit=payloads.output_policy(claim.supermap_request)[1], attempt=claim.attempt)


def _name(claim: tasks_repo.Claim, prepared: Prepared) -> str:
    return prepared.request.output_name or f"{prepared.base_name()}_{claim.analysis_type}_{str(claim.task_id)[:8]}"


# --- adding the chunks' summaries up -------------------------------------------------------------------

def merge_metadata(summaries: list[dict[str, Any]], chunks: int) -> dict[str, Any]:
    """The chunks' operation metadata as one: counts and totals summed, the largest scale error, the rest
    as the first chunk has it; plus the repairs made when storing and the number of chunks."""
    parts = [s.get("metadata") or {} for s in summaries]
    out: dict[str, Any] = dict(parts[0]) if parts else {}
    for key in SUMMED:
        values = [p[key] for p in parts if isinstance(p.get(key), int | float)]
        if values:
            out[key] = sum(values)
    for key in SUMMED_DICTS:
        total: Counter[str] = Counter()
        for p in parts:
            total.update({k: v for k, v in (p.get(key) or {}).items() if isinstance(v, int | float)})
        if total:
            out[key] = dict(total)
    errors = [p["max_scale_error"] for p in parts if isinstance(p.get("max_scale_error"), int | float)]
    if errors:
        out["max_scale_error"] = max(errors)
    out["extent"] = merge_extent(p.get("extent") for p in parts)
    out["geometry_types"] = sorted({t for p in parts for t in p.get("geometry_types") or []})
    out["repaired_features"] = sum(int(s.get("repaired", 0)) for s in summaries)
    out["chunks"] = chunks
    return out


def merge_extent(extents: Any) -> list[float] | None:
    boxes = np.array([e for e in extents if e], dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return None
    return [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]


def merge_family(families: Any) -> str:
    """One layer type from the chunks' (``Polygon`` + ``MultiPolygon`` is ``MultiPolygon``; two kinds mix)."""
    seen = {f for f in families if f and f != "Unknown"}
    if not seen:
        return "Unknown"
    if "Geometry" in seen or len({f.removeprefix("Multi") for f in seen}) > 1:
        return "Geometry"
    return max(seen, key=len)


def merge_fields(per_chunk: Any) -> list[dict[str, str]]:
    """Attribute types as one run would infer them: a column's type where it has values (int and float give
    float), ``str`` where no chunk has a value."""
    order: list[str] = []
    kinds: dict[str, set[str]] = {}
    for fields in per_chunk:
        for f in fields:
            if f["name"] not in kinds:
                order.append(f["name"])
                kinds[f["name"]] = set()
            if f.get("type"):
                kinds[f["name"]].add(f["type"])
    out = []
    for name in order:
        found = kinds[name]
        kind = found.pop() if len(found) == 1 else ("float" if found == {"int", "float"} else "str" if not found
                                                       else "json" if "json" in found else "str")
        out.append({"name": name, "type": kind})
    return out
