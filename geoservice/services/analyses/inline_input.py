"""Inline GeoJSON inputs: parsed and validated once, by the same checks a stored dataset's import makes."""

from __future__ import annotations

from geopandas import GeoDataFrame

from geoservice.analysis.request import InputRef
from geoservice.analysis.validation import validate_geometries
from geoservice.errors import GeoserviceError
from geoservice.fileio.readers import read_feature_collection


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
