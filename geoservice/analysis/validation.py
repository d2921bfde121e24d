"""Check (and optionally repair) the geometries of an imported layer.

Pure: a GeoDataFrame in, a GeoDataFrame out; no I/O. The checks run in this order, each vectorised
over the whole layer, and the first failing check raises ``InvalidGeometry`` (422) naming the first
offending feature (``field="features[i].geometry"``, ``feature=i``) and how many more have the problem:

1. null geometry; 2. empty geometry; 3. NaN or infinite coordinates (x, y and z);
4. in a geographic CRS, latitude beyond ±90 or longitude beyond ±540 (±540 leaves room for data that
   crosses the antimeridian, e.g. longitudes 170..190);
5. one geometry family per layer: points (Point, MultiPoint), lines (LineString, MultiLineString) or
   polygons (Polygon, MultiPolygon); a GeometryCollection is refused;
6. OGC validity (``shapely.is_valid_reason``). With ``make_valid=True`` invalid geometries are repaired
   with ``shapely.make_valid(method="structure", keep_collapsed=False)`` (GEOS >= 3.10; else the
   "linework" method), keeping only the parts of the original family (a bow-tie polygon becomes a
   MultiPolygon, collapsed slivers are dropped, a multi-part input stays multi-part). A repair that
   leaves nothing of the original family is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from geopandas import GeoDataFrame, GeoSeries

from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS

_TYPE_NAMES = ("Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
#: shapely type id -> family id (0 point, 1 line, 2 polygon, -1 collection)
_FAMILY = np.array([0, 1, 1, 2, 0, 1, 2, -1])
_FAMILY_NAMES = ("Point", "LineString", "Polygon")
_MULTI_IDS = (4, 5, 6)
_COLLECTION_ID = 7


def validate_geometries(
    gdf: GeoDataFrame, *, make_valid: bool, feature_labels: Sequence[Any] | None = None, allow_mixed: bool = False
) -> tuple[GeoDataFrame, list[dict[str, Any]]]:
    """Check every geometry of ``gdf``; repair invalid ones when ``make_valid`` is true.

    Args:
        gdf: the layer, with its CRS set (any CRS; the latitude check applies to geographic ones).
        make_valid: repair OGC-invalid geometries instead of refusing them.
        feature_labels: how features are named in errors and in the repair list, one per row
            (default: the 0-based position, i.e. the index of the feature in the input).
        allow_mixed: accept several geometry families and GeometryCollections (analysis outputs that
            asked for them, e.g. an overlay with ``keep_geom_type=false``).

    Returns:
        ``(gdf, repaired)``: ``gdf`` itself when nothing was repaired, else a copy with the repaired
        geometries; ``repaired`` is ``[{"feature": label, "problem": "Self-intersection[1 1]"}, ...]``.

    Raises:
        MissingCRS: ``gdf`` has no CRS.
        InvalidGeometry: the first failing check, see the module docstring.
    """
    labels = list(range(len(gdf))) if feature_labels is None else list(feature_labels)
    if len(labels) != len(gdf):
        raise ValueError(f"feature_labels has {len(labels)} labels for {len(gdf)} features")
    if gdf.crs is None:
        raise MissingCRS("the layer has no CRS", field="crs")
    geoms = np.asarray(gdf.geometry.array, dtype=object)
    _refuse(shapely.is_missing(geoms), labels, "null geometry")
    _refuse(shapely.is_empty(geoms), labels, "empty geometry")
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    _check_finite(geoms, xy, owner, labels)
    if gdf.crs.is_geographic:
        _check_lonlat(xy, owner, labels, gdf.crs)
    types = shapely.get_type_id(geoms)
    if not allow_mixed:
        _check_one_family(types, labels)
    invalid = np.flatnonzero(~shapely.is_valid(geoms))
    if not len(invalid):
        return gdf, []
    reasons = [str(r) for r in shapely.is_valid_reason(geoms[invalid])]
    if not make_valid:
        where = _where(labels[invalid[0]])
        raise InvalidGeometry(
            f"{where}: invalid geometry: {reasons[0]}{_more(len(invalid))}; pass make_valid=true to repair",
            field=where,
            feature=labels[invalid[0]],
        )
    fixed = _repair(geoms[invalid], types[invalid], keep_all=allow_mixed)
    lost = np.flatnonzero(shapely.is_missing(fixed) | shapely.is_empty(fixed))
    if len(lost):
        k = int(lost[0])
        where = _where(labels[invalid[k]])
        raise InvalidGeometry(
            f"{where}: invalid geometry ({reasons[k]}) cannot be repaired: nothing of its type is left"
            f"{_more(len(lost))}",
            field=where,
            feature=labels[invalid[k]],
        )
    geoms = geoms.copy()
    geoms[invalid] = fixed
    result = gdf.copy()
    result[gdf.geometry.name] = GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
    repaired = [{"feature": labels[i], "problem": reason} for i, reason in zip(invalid, reasons, strict=True)]
    return result, repaired


def geometry_family(gdf: GeoDataFrame, *, allow_mixed: bool = False) -> str:
    """Return the layer's geometry type for a column or file layer definition.

    ``"Point"``, ``"LineString"`` or ``"Polygon"``, prefixed with ``"Multi"`` when any feature is
    multi-part (a layer of Polygons and MultiPolygons is ``"MultiPolygon"``; LinearRings count as
    LineStrings). Null and empty geometries are ignored.

    Raises:
        EmptyInput: the layer has no non-empty geometry.
        InvalidGeometry: the layer mixes families or holds a GeometryCollection.
    """
    geoms = np.asarray(gdf.geometry.array, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    types = shapely.get_type_id(geoms[present])
    if not len(types):
        if allow_mixed:
            return "Unknown"
        raise EmptyInput("the layer has no non-empty geometries")
    if allow_mixed and (len({int(_FAMILY[t]) for t in types}) > 1 or (_FAMILY[types] < 0).any()):
        return "Geometry"
    _check_one_family(types, list(np.flatnonzero(present)))
    family = _FAMILY_NAMES[_FAMILY[types[0]]]
    return f"Multi{family}" if np.isin(types, _MULTI_IDS).any() else family


def _where(label: Any) -> str:
    return f"features[{label}].geometry"


def _more(count: int) -> str:
    return f" (and {count - 1} more)" if count > 1 else ""


def _refuse(mask: np.ndarray, labels: list[Any], problem: str) -> None:
    bad = np.flatnonzero(mask)
    if len(bad):
        label = labels[bad[0]]
        raise InvalidGeometry(f"{_where(label)}: {problem}{_more(len(bad))}", field=_where(label), feature=label)


def check_coordinates(gdf: GeoDataFrame, labels: Sequence[Any] | None = None) -> None:
    """Refuse non-finite coordinates, and latitudes beyond ±90 (longitudes beyond ±540) in a geographic CRS.

    Raises:
        InvalidGeometry: naming the first feature (``labels``, default its position).
    """
    labels = list(range(len(gdf))) if labels is None else list(labels)
    geoms = np.asarray(gdf.geometry.array, dtype=object)
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    _check_finite(geoms, xy, owner, labels)
    if gdf.crs is not None and gdf.crs.is_geographic:
        _check_lonlat(xy, owner, labels, gdf.crs)


def _check_finite(geoms: np.ndarray, xy: np.ndarray, owner: np.ndarray, labels: list[Any]) -> None:
    rows = ~np.isfinite(xy).all(axis=1)
    bad = set(owner[rows].tolist())
    first = (int(owner[rows][0]), xy[rows][0].tolist()) if rows.any() else None
    has_z = np.flatnonzero(shapely.has_z(geoms))
    if len(has_z):
        xyz, z_owner = shapely.get_coordinates(geoms[has_z], include_z=True, return_index=True)
        z_rows = ~np.isfinite(xyz[:, 2])
        z_bad = has_z[z_owner[z_rows]]
        bad.update(z_bad.tolist())
        if z_rows.any() and (first is None or z_bad[0] < first[0]):
            first = (int(z_bad[0]), xyz[z_rows][0].tolist())
    if first is not None:
        label = labels[first[0]]
        coordinate = ", ".join(str(v) for v in first[1])
        raise InvalidGeometry(
            f"{_where(label)}: non-finite coordinate ({coordinate}){_more(len(bad))}",
            field=_where(label),
            feature=label,
        )


def _check_lonlat(xy: np.ndarray, owner: np.ndarray, labels: list[Any], crs: Any) -> None:
    authority = crs.to_authority()
    name = ":".join(authority) if authority else crs.name
    for axis, limit, what in ((1, 90.0, "latitude"), (0, 540.0, "longitude")):
        rows = np.abs(xy[:, axis]) > limit
        if rows.any():
            label = labels[int(owner[rows][0])]
            count = len(np.unique(owner[rows]))
            raise InvalidGeometry(
                f"{_where(label)}: {what} {float(xy[rows][0, axis])!r} is beyond ±{limit:g} "
                f"({name} is a geographic CRS){_more(count)}",
                field=_where(label),
                feature=label,
            )


def _check_one_family(types: np.ndarray, labels: list[Any]) -> None:
    collections = types == _COLLECTION_ID
    if collections.any():
        _refuse(collections, labels, "mixed geometry collection (GeometryCollection is not supported)")
    families = _FAMILY[types]
    other = np.flatnonzero(families != families[0])
    if len(other):
        ids, counts = np.unique(types, return_counts=True)
        summary = ", ".join(f"{n} {_TYPE_NAMES[t]}" for t, n in zip(ids, counts, strict=True))
        label = labels[other[0]]
        raise InvalidGeometry(
            f"{_where(label)}: mixed geometry types ({summary}); a layer holds one family: points, "
            f"lines or polygons{_more(len(other))}",
            field=_where(label),
            feature=label,
        )


def _repair(geoms: np.ndarray, types: np.ndarray, *, keep_all: bool = False) -> np.ndarray:
    try:
        fixed = shapely.make_valid(geoms, method="structure", keep_collapsed=False)
    except (ValueError, shapely.errors.GEOSException, shapely.errors.UnsupportedGEOSVersionError):
        fixed = shapely.make_valid(geoms)  # GEOS < 3.10 has only the "linework" method
    if keep_all:
        return np.asarray(fixed, dtype=object)
    out = np.empty(len(fixed), dtype=object)
    for k, (geom, type_id) in enumerate(zip(fixed, types, strict=True)):
        out[k] = _keep_family(geom, int(_FAMILY[type_id]), multi=int(type_id) in _MULTI_IDS)
    return out


def _keep_family(geom: Any, family: int, *, multi: bool) -> Any:
    """Keep the parts of ``geom`` that belong to ``family``; None when nothing is left."""
    parts = shapely.get_parts(shapely.get_parts(geom))  # collection -> multi -> single parts
    kept = [p for p in parts if not p.is_empty and _FAMILY[shapely.get_type_id(p)] == family]
    if not kept:
        return None
    if len(kept) == 1 and not multi:
        return kept[0]
    build = (shapely.multipoints, shapely.multilinestrings, shapely.multipolygons)[family]
    return build(kept)
