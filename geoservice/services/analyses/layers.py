"""Loading an analysis's input layers: stored datasets (with their feature selection) or inline GeoJSON.

The one loader, for the Celery runner and for in-process runs alike; access was checked by ``prepare``.
"""

from __future__ import annotations

from geopandas import GeoDataFrame
from sqlalchemy.orm import Session

from geoservice.analysis.request import InputRef
from geoservice.analysis.validation import validate_geometries
from geoservice.errors import GeoserviceError
from geoservice.fileio.readers import read_feature_collection
from geoservice.services import selection
from geoservice.services.analyses.prepare import Prepared


def load_layers(session: Session, prepared: Prepared, *, field_prefix: str = "") -> dict[str, GeoDataFrame]:
    """Return the request's input layers by input name.

    ``field_prefix`` is put before field names in errors (``"parameters."`` for the task API).
    """
    layers: dict[str, GeoDataFrame] = {}
    for key, ref in prepared.request.inputs.items():
        if key in prepared.sources:
            # Only the selected features and attributes (issue #5: filters of the SuperMap surface).
            layers[key] = selection.read_input(session, prepared.sources[key], ref.where, ref.fields
                                               ).reset_index(drop=True)
        else:
            layers[key] = inline_layer(ref, f"{field_prefix}{key}")
    return layers


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
