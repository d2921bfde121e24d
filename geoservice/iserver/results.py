"""iServer response bodies: analysis results, recordsets, CreateChild, errors.

Shapes from shared/reference/supermap-rest.md section 3. Regions carry ``partTopo`` (``to_supermap``).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import orjson
import shapely
from shapely.geometry.base import BaseGeometry

from geoservice.iserver.geometry import to_supermap

#: iServer field types for our recorded attribute types.
FIELD_TYPES = {"int": "INT32", "float": "DOUBLE", "str": "WTEXT", "bool": "BOOLEAN", "date": "DATETIME",
               "datetime": "DATETIME", "json": "WTEXT"}
INT32_MAX = 2**31 - 1


def geometry_json(geom: BaseGeometry | None, epsg: int | None, gid: int = 0) -> dict[str, Any] | None:
    """A result geometry in SuperMap JSON; None for an empty result (nothing left after an overlay)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type == "GeometryCollection":
        # SuperMap has no mixed geometries (a line x line intersection gives points and lines): keep the
        # parts of the highest dimension.
        parts = shapely.get_parts(geom)
        dims = shapely.get_dimensions(parts)
        top = parts[dims == dims.max()]
        make = {0: shapely.multipoints, 1: shapely.multilinestrings, 2: shapely.multipolygons}[int(dims.max())]
        geom = top[0] if len(top) == 1 else make(shapely.get_parts(top))
    return to_supermap(geom, gid=gid, epsg=epsg)


def geometry_result(geom: BaseGeometry | None, epsg: int | None, message: str | None = None) -> dict[str, Any]:
    """The result of a geometry analysis (``geometryBufferResult`` / ``geometryOverlayResult``)."""
    return {"succeed": True, "message": message, "image": None, "resultGeometry": geometry_json(geom, epsg)}


def create_child(resource_id: str, location: str) -> dict[str, Any]:
    """The 201 body of a POST without ``returnContent``."""
    return {"succeed": True, "postResultType": "CreateChild", "newResourceID": resource_id,
            "newResourceLocation": location}


def error_body(code: int, message: str) -> dict[str, Any]:
    """iServer's error body; ``code`` mirrors the HTTP status."""
    return {"succeed": False, "error": {"code": code, "errorMsg": message}}


def _value_text(value: Any) -> str | None:
    """Field values are strings in iServer recordsets."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if hasattr(value, "item"):  # numpy scalars
        return _value_text(value.item())
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def recordset(fields: list[dict[str, Any]], rows: list[tuple[int, BaseGeometry, dict[str, Any]]],
              epsg: int | None, dataset_name: str | None) -> dict[str, Any]:
    """An iServer recordset: ``SmID`` then the dataset's fields, values as strings, SuperMap geometries.

    Args:
        fields: the result dataset's fields (``{"name", "type"}``).
        rows: ``(fid, geometry, attributes)`` per feature.
        epsg: the result's EPSG code (for ``prjCoordSys``).
        dataset_name: ``name@datasource`` when the result is kept as a dataset, else None.
    """
    names = ["SmID", *(f["name"] for f in fields)]
    types = ["INT32", *(_field_type(f, rows) for f in fields)]
    features = []
    for fid, geom, attrs in rows:
        values = [str(fid), *(_value_text(attrs.get(f["name"])) for f in fields)]
        features.append({"ID": fid, "fieldNames": names, "fieldValues": values,
                         "geometry": geometry_json(geom, epsg, gid=fid)})
    return {"datasetName": dataset_name, "fields": names, "fieldCaptions": names, "fieldTypes": types,
            "features": features}


def _field_type(field: dict[str, Any], rows: list[tuple[int, BaseGeometry, dict[str, Any]]]) -> str:
    kind = FIELD_TYPES.get(field.get("type", "str"), "WTEXT")
    if kind == "INT32":
        big = any(isinstance(v, int) and abs(v) > INT32_MAX for v in (r[2].get(field["name"]) for r in rows))
        return "INT64" if big else kind
    return kind
