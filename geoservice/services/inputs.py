"""Loading an analysis's input layers: stored datasets (with their feature selection) or inline GeoJSON.

Shared by the Celery runner and the agents' in-process calls, so both read inputs the same way.
"""

from __future__ import annotations

from typing import Any

from geopandas import GeoDataFrame
from sqlalchemy.orm import Session

from geoservice.analysis.params import InputRef
from geoservice.analysis.registry import Operation
from geoservice.analysis.validation import validate_geometries
from geoservice.db.models import Dataset
from geoservice.errors import GeoserviceError, InvalidInput, NotFound
from geoservice.fileio.readers import read_feature_collection
from geoservice.services import datasets as dataset_service
from geoservice.services import selection
from geoservice.services.access import Principal


def load_inputs(session: Session, principal: Principal, op: Operation, params: Any, *, field_prefix: str = ""
                ) -> tuple[dict[str, GeoDataFrame], dict[str, Dataset]]:
    """Return the operation's input layers (by params field) and the stored datasets they came from.

    ``field_prefix`` is put before field names in errors (``"parameters."`` for the task API).
    """
    layers: dict[str, GeoDataFrame] = {}
    sources: dict[str, Dataset] = {}
    for key in op.inputs:
        ref: InputRef = getattr(params, key)
        if ref.dataset_id is not None:
            dataset = input_dataset(session, principal, ref, f"{field_prefix}{key}")
            # Only the selected features and attributes (issue #5: filters of the SuperMap surface).
            layers[key] = selection.read_input(session, dataset, ref.where, ref.fields).reset_index(drop=True)
            sources[key] = dataset
        else:
            layers[key] = inline_layer(ref, f"{field_prefix}{key}")
    return layers, sources


def input_dataset(session: Session, principal: Principal, ref: InputRef, field: str) -> Dataset:
    """The stored dataset an input names, if the principal may read it (else a 422 naming the field)."""
    try:
        return dataset_service.get_dataset(session, ref.dataset_id, principal)  # type: ignore[arg-type]
    except NotFound as exc:
        where = f"{field}.dataset_id"
        raise InvalidInput(f"{where}: unknown dataset {ref.dataset_id}", field=where) from exc


def inline_layer(ref: InputRef, field: str) -> GeoDataFrame:
    """Inline GeoJSON (a FeatureCollection, a Feature or a bare geometry) as a validated layer."""
    obj = ref.geojson or {}
    if obj.get("type") == "Feature":
        obj = {"type": "FeatureCollection", "features": [obj]}
    elif obj.get("type") not in {"FeatureCollection", None}:
        obj = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": obj, "properties": {}}]}
    try:
        gdf, _ = validate_geometries(read_feature_collection(obj, crs=ref.crs).gdf, make_valid=False)
    except GeoserviceError as exc:
        raise type(exc)(f"{field}.geojson: {exc.detail}", field=f"{field}.geojson", feature=exc.feature,
                        extra=exc.extra) from exc
    return gdf
