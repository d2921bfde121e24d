"""Running an analysis through the operation registry and recording its output, the same way for everyone.

``compute`` is the one call into the registry. ``record_result`` is the one way an output is stored (a
result dataset when it is kept, the ``analysis_results`` row, the iServer result): the worker uses it under
its lease, and ``run_inline`` uses it for small inputs computed in the calling process, which are recorded
as ``analysis_tasks`` rows that are ``successful`` from the start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame
from psycopg import sql
from sqlalchemy.orm import Session

from geoservice.analysis.base import AnalysisOutput, ProgressFn, no_progress
from geoservice.analysis.crs import crs_label
from geoservice.analysis.request import AnalysisRequest
from geoservice.config import Settings
from geoservice.db import gis_io
from geoservice.db.models import Dataset
from geoservice.db.repositories import tasks as repo
from geoservice.iserver import payloads
from geoservice.services import datasets as dataset_service
from geoservice.services.access import Principal
from geoservice.services.analyses.layers import load_layers
from geoservice.services.analyses.prepare import Prepared

MEASURES = ("geodesic_area_m2", "geodesic_length_m")
_BUILD: Any = object()  # "build the iServer result from the output" (the default)


@dataclass(frozen=True)
class Recorded:
    """A recorded output: the result dataset (when kept), the result row's data and metadata, the iServer result."""

    dataset: Dataset | None
    data: dict[str, Any]
    metadata: dict[str, Any]
    supermap_result: Any


@dataclass(frozen=True)
class InlineRun:
    """An analysis run in the calling process: its task (recorded successful), output and result dataset."""

    task_id: uuid.UUID
    supermap_result: Any
    output: AnalysisOutput
    dataset: Dataset | None


def compute(request: AnalysisRequest, layers: Mapping[str, GeoDataFrame],
            progress: ProgressFn = no_progress) -> AnalysisOutput:
    """Run the request's operation on its layers (pure: no database)."""
    return request.operation.run(layers, request.settings, progress)


def record_result(session: Session, task_id: uuid.UUID, owner_id: uuid.UUID, prepared: Prepared,
                  output: AnalysisOutput, *, store: bool, record: Any, recordset_limit: int | None = None,
                  supermap_result: Any = _BUILD, attempt: int | None = None) -> Recorded:
    """Store an output (flushes; the caller holds the task's lock or is inserting it).

    Args:
        store: keep the output as a dataset of ``owner_id`` (named ``output_name`` or generated).
        record: the task's ``supermap_request`` (None: no iServer result is built).
        recordset_limit: put the first features in the iServer result's recordset.
        supermap_result: the iServer result when the caller rendered it (default: built from ``record``).
        attempt: the worker's attempt number, kept in the result metadata.
    """
    dataset, repaired = None, 0
    if store:
        name = prepared.request.output_name or f"{prepared.base_name()}_{prepared.analysis_type}_{str(task_id)[:8]}"
        stored = dataset_service.store_layer(session, owner_id, name, output.gdf, analysis_output=True,
                                             source={"task_id": str(task_id), "analysis_type": prepared.analysis_type})
        dataset, repaired = stored.dataset, len(stored.repaired)
    metadata = {**output.metadata, "repaired_features": repaired, **({"attempt": attempt} if attempt else {})}
    if supermap_result is _BUILD:
        rows = recordset_rows(session, output, dataset, recordset_limit) if recordset_limit else None
        supermap_result = None if record is None else payloads.task_result(
            record, dataset_name=dataset.name if dataset else None, recordset=rows)
    return Recorded(dataset, _result_data(dataset, output), metadata, supermap_result)


def add_result_row(session: Session, task_id: uuid.UUID, recorded: Recorded) -> None:
    """The task's ``analysis_results`` row (``dataset``: the result is a stored dataset; ``inline``: it is not)."""
    dataset = recorded.dataset
    repo.add_result(session, task_id=task_id, result_type="dataset" if dataset else "inline", data=recorded.data,
                    result_metadata=recorded.metadata, dataset_id=dataset.id if dataset else None)


def run_inline(session: Session, settings: Settings, principal: Principal, prepared: Prepared, *, name: str,
               description: str | None, layers: Mapping[str, GeoDataFrame] | None = None,
               store: bool | Callable[[AnalysisOutput], bool] = False, supermap_request: Any = _BUILD,
               supermap_result: Callable[[AnalysisOutput], Any] | None = None) -> InlineRun:
    """Run a small analysis here and record it as a ``successful`` task (flushes; the caller commits).

    Args:
        layers: the input layers when the caller decoded them already (default: loaded from the request).
        store: keep the output as a dataset, or a function of the output deciding it.
        supermap_request: the iServer request to record (default: the task's equivalent, if it has one).
        supermap_result: renders the iServer result from the output (default: built like a task's).
    """
    principal.require_write("run analyses")
    started = datetime.now(UTC)
    output = compute(prepared.request, layers if layers is not None else load_layers(session, prepared))
    task_id = uuid.uuid4()
    record = payloads.task_request(prepared.request, prepared.sources) if supermap_request is _BUILD \
        else supermap_request
    recorded = record_result(session, task_id, principal.user_id, prepared, output,
                             store=store(output) if callable(store) else store, record=record,
                             supermap_result=_BUILD if supermap_result is None else supermap_result(output))
    dataset = recorded.dataset
    repo.record_inline(session, repo.InlineRecord(
        id=task_id, name=name[:255], description=description, analysis_type=prepared.analysis_type,
        parameters=prepared.request.parameters(), created_by=principal.user_id,
        max_attempts=settings.task_max_attempts, queue=settings.task_queue, started_at=started,
        supermap_request=record, supermap_result=recorded.supermap_result,
        result_dataset_id=dataset.id if dataset else None, result_type="dataset" if dataset else "inline",
        data=recorded.data, result_metadata=recorded.metadata))
    return InlineRun(task_id, recorded.supermap_result, output, dataset)


def _result_data(dataset: Dataset | None, output: AnalysisOutput) -> dict[str, Any]:
    """What the result row says of the output: the dataset's description, or a summary when none is kept."""
    measures = {k: output.metadata[k] for k in MEASURES if k in output.metadata}
    if dataset is not None:
        return {"dataset_id": str(dataset.id), "dataset_name": dataset.name, "feature_count": dataset.feature_count,
                "extent": dataset.extent, "extent_crs84": dataset.extent_crs84, "crs": dataset.crs,
                "geometry_type": dataset.geometry_type, **measures}
    gdf, meta = output.gdf, output.metadata
    crs = gdf.crs
    if "extent" in meta and "geometry_types" in meta:  # the operation's summary has them already
        extent, types = meta["extent"], meta["geometry_types"]
    else:
        geoms = np.asarray(gdf.geometry.array, dtype=object)
        extent = [float(v) for v in shapely.total_bounds(geoms)] if len(gdf) else None
        types = sorted({g.geom_type for g in geoms if g is not None})
    return {"feature_count": len(gdf), "extent": extent, "crs": crs_label(crs) if crs is not None else None,
            "geometry_types": types, **measures}


def recordset_rows(session: Session, output: AnalysisOutput | None, dataset: Dataset | None, limit: int
                    ) -> tuple[list[dict[str, Any]], list[tuple[int, Any, dict[str, Any]]], int | None]:
    """``(fields, rows, epsg)`` of the first ``limit`` features: read back from the stored dataset (what its
    readers get), or taken from the output when it is not kept (feature ids 1..n, as a stored one would have)."""
    if dataset is not None:
        query = gis_io.select_features_sql(sql.SQL("dataset_id = %(d)s"), sql.SQL("ORDER BY fid LIMIT %(n)s"))
        with gis_io.raw_connection(session).cursor(binary=True) as cur:
            cur.execute(query, {"d": dataset.id, "n": limit})
            found = cur.fetchall()
        geoms = shapely.from_wkb([r[1] for r in found])
        rows = [(int(r[0]), g, r[2] or {}) for r, g in zip(found, geoms, strict=True)]
        return list(dataset.fields or []), rows, payloads.epsg_of(dataset.crs)
    assert output is not None
    head = output.gdf.iloc[:limit]
    columns = [c for c in head.columns if c != head.geometry.name]
    records = head[columns].to_dict("records") if columns else [{} for _ in range(len(head))]
    rows = [(i + 1, g, r) for i, (g, r) in enumerate(zip(head.geometry, records, strict=True))]
    epsg = payloads.epsg_of(output.gdf.crs) if output.gdf.crs is not None else None
    return dataset_service.infer_fields(output.gdf), rows, epsg


def store_task_result(session: Session, claim: repo.Claim, prepared: Prepared, output: AnalysisOutput) -> bool:
    """The worker's final write: output, result row, iServer result and ``successful`` in one transaction, if
    the claim still holds the task (False: it was dismissed or taken over, and nothing is written)."""
    if repo.lock_if_holding(session, claim.task_id, claim.owner) is None:
        return False
    keep, limit = payloads.output_policy(claim.supermap_request)
    recorded = record_result(session, claim.task_id, claim.created_by, prepared, output, store=keep,
                             record=claim.supermap_request, recordset_limit=limit, attempt=claim.attempt)
    add_result_row(session, claim.task_id, recorded)
    return repo.succeed(session, claim.task_id, claim.owner, supermap_result=recorded.supermap_result,
                        result_dataset_id=recorded.dataset.id if recorded.dataset else None)
