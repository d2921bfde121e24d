"""Strict parsing of a GeoJSON FeatureCollection: precise errors on the raw input, exact geometries.

The raw coordinates are checked before shapely sees them, because GEOS/GDAL would close an unclosed
ring silently or fail without naming the feature. Positions are checked with numpy (shape, finiteness,
closure); a ``[tfn"{]`` byte in the serialised coordinates (``true``, ``false``, ``null``, a string or
an object: never part of a JSON number) sends the geometry to a number-by-number check that names
the offending value. Geometries are then built with ``shapely.from_ragged_array`` per type from the
same float64 arrays (Python floats are doubles, so nothing is rounded); GeometryCollections and
geometries with empty parts go through ``shapely.from_geojson``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import shapely
from shapely import GeometryType

from geoservice.analysis.errors import EmptyInput, InvalidGeometry
from geoservice.errors import InvalidInput

_GEOMETRY_TYPES = frozenset(
    ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection")
)
_RAGGED_TYPES = {
    "Point": GeometryType.POINT,
    "LineString": GeometryType.LINESTRING,
    "Polygon": GeometryType.POLYGON,
    "MultiPoint": GeometryType.MULTIPOINT,
    "MultiLineString": GeometryType.MULTILINESTRING,
    "MultiPolygon": GeometryType.MULTIPOLYGON,
}
_NOT_A_NUMBER = re.compile(rb'[tfn"{]')
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: A checked geometry: (type, dimension, coordinate arrays nested like the GeoJSON), or ("raw", 0, geometry).
Shape = tuple[str, int, Any]


def parse_feature_collection(obj: Any) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Check ``obj`` strictly and return ``(attributes, geometries, notes)`` in feature order.

    Raises:
        InvalidInput: wrong structure (``type``, ``features``, a feature, its properties).
        EmptyInput: ``features`` is empty.
        InvalidGeometry: null geometry, unknown type, bad coordinates, unclosed or short ring
            (``field="features[i].geometry"``, ``feature=i``).
    """
    features = _collection_features(obj)
    shapes: list[Shape] = []
    properties: list[dict[str, Any]] = []
    for i, feature in enumerate(features):
        geometry, props = _feature_parts(i, feature)
        shapes.append(_GeometryCheck(i).geometry(geometry, ""))
        properties.append(props)
    geometries = _build(shapes)
    attributes, notes = _properties_frame(properties)
    return attributes, geometries, notes


def _collection_features(obj: Any) -> list[Any]:
    if not isinstance(obj, dict):
        raise InvalidInput(f"expected a GeoJSON FeatureCollection object, got {json_type(obj)}")
    kind = obj.get("type")
    if kind != "FeatureCollection":
        got = "nothing" if kind is None else repr(kind) if isinstance(kind, str) else json_type(kind)
        raise InvalidInput(f"type: expected 'FeatureCollection', got {got}", field="type")
    features = obj.get("features")
    if not isinstance(features, list):
        got = "nothing" if features is None else json_type(features)
        raise InvalidInput(f"features: expected an array of Features, got {got}", field="features")
    if not features:
        raise EmptyInput("features: the FeatureCollection has no features", field="features")
    return features


def _feature_parts(i: int, feature: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    where = f"features[{i}]"
    if not isinstance(feature, dict):
        raise InvalidInput(f"{where}: expected a Feature object, got {json_type(feature)}", field=where, feature=i)
    if feature.get("type") != "Feature":
        got = feature.get("type")
        raise InvalidInput(f"{where}.type: expected 'Feature', got {got!r}", field=f"{where}.type", feature=i)
    if "geometry" not in feature:
        raise InvalidGeometry(f"{where}.geometry: missing", field=f"{where}.geometry", feature=i)
    geometry = feature["geometry"]
    if geometry is None:
        raise InvalidGeometry(f"{where}.geometry: null geometry", field=f"{where}.geometry", feature=i)
    props = feature.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise InvalidInput(
            f"{where}.properties: expected an object or null, got {json_type(props)}",
            field=f"{where}.properties",
            feature=i,
        )
    return geometry, props


class _GeometryCheck:
    """Check one feature's raw GeoJSON geometry; errors name ``features[i].geometry``."""

    def __init__(self, i: int, *, strict: bool = False) -> None:
        self.i = i
        self.strict = strict  # check every number one by one (slow, precise)
        self.has_empty = False

    def fail(self, path: str, message: str) -> InvalidGeometry:
        where = f"features[{self.i}].geometry{path}"
        return InvalidGeometry(f"{where}: {message}", field=f"features[{self.i}].geometry", feature=self.i)

    def geometry(self, geom: Any, path: str) -> Shape:
        if not isinstance(geom, dict):
            raise self.fail(path, f"expected a geometry object, got {json_type(geom)}")
        kind = geom.get("type")
        if not isinstance(kind, str) or kind not in _GEOMETRY_TYPES:
            raise self.fail(path, f"unknown geometry type {kind!r}")
        if kind == "GeometryCollection":
            members = geom.get("geometries")
            if not isinstance(members, list):
                raise self.fail(path, "GeometryCollection needs a 'geometries' array")
            for k, member in enumerate(members):
                self.geometry(member, f"{path}.geometries[{k}]")
            return ("raw", 0, geom)
        if "coordinates" not in geom:
            raise self.fail(path, f"{kind} has no 'coordinates'")
        dims: set[int] = set()
        payload = self.coordinates(kind, geom["coordinates"], path, dims)
        if len(dims) > 1:
            raise self.fail(path, "positions mix 2 and 3 dimensions")
        if not self.strict and _has_non_number(geom["coordinates"]):
            return _GeometryCheck(self.i, strict=True).geometry(geom, path)  # raises with the exact value
        if self.has_empty or not dims:
            return ("raw", 0, geom)
        return (kind, dims.pop(), payload)

    def coordinates(self, kind: str, coords: Any, path: str, dims: set[int]) -> Any:
        if kind == "Point":
            if coords == []:  # an empty point; validate_geometries reports it
                return None
            return self.positions([coords], path, "position", dims)
        if kind in ("MultiPoint", "LineString"):
            return self.positions(coords, path, "position {k}", dims, min_count=2 if kind == "LineString" else 0)
        if kind == "MultiLineString":
            return [
                self.positions(line, path, f"position {{k}} of line {n}", dims, min_count=2)
                for n, line in enumerate(self.array(coords, path, "lines"))
            ]
        if kind == "Polygon":
            return self.polygon(coords, path, "polygon", dims)
        return [self.polygon(p, path, f"polygon {n}", dims) for n, p in enumerate(self.array(coords, path, "polygons"))]

    def array(self, value: Any, path: str, what: str) -> list[Any]:
        # (a tuple is no JSON type, but Python callers pass ``shapely.geometry.mapping`` output)
        if not isinstance(value, list | tuple):
            raise self.fail(path, f"coordinates: expected an array of {what}, got {json_type(value)}")
        if not value:
            self.has_empty = True
        return value

    def polygon(self, rings: Any, path: str, name: str, dims: set[int]) -> list[np.ndarray]:
        arrays = []
        for r, ring in enumerate(self.array(rings, path, "rings")):
            label = f"ring {r} of {name}"
            array = self.positions(ring, path, f"position {{k}} of {label}", dims)
            if len(ring) < 4:
                raise self.fail(path, f"{label} has {len(ring)} positions (a closed ring needs at least 4)")
            first, last = ring[0], ring[-1]
            if first[0] != last[0] or first[1] != last[1]:
                raise self.fail(path, f"{label} is not closed (first {json_text(first)} != last {json_text(last)})")
            arrays.append(array)
        return arrays

    def positions(self, seq: Any, path: str, label: str, dims: set[int], min_count: int = 0) -> np.ndarray:
        """Check an array of positions (2 or 3 finite numbers each) and return it as float64."""
        seq = self.array(seq, path, "positions")
        if 0 < len(seq) < min_count:  # an empty array is an empty geometry: validate_geometries reports it
            name = label.split(" of ", 1)[1] if " of " in label else "the line"
            raise self.fail(path, f"{name} has {len(seq)} position (a line needs at least {min_count})")
        try:
            array = np.asarray(seq, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            array = None
        if array is not None and not self.strict and _good_positions(array):
            dims.add(array.shape[1])
            return array
        for k, pos in enumerate(seq):
            self.position(pos, path, label.format(k=k))
            dims.add(len(pos))
        return array if array is not None else np.empty((0, 2))

    def position(self, pos: Any, path: str, label: str) -> None:
        if type(pos) not in (list, tuple) or not 2 <= len(pos) <= 3:
            what = (
                f"has {len(pos)} number{'' if len(pos) == 1 else 's'}"
                if type(pos) in (list, tuple)
                else f"is a JSON {json_type(pos)}"
            )
            raise self.fail(path, f"{label} {what} (expected [x, y] or [x, y, z])")
        for v in pos:
            t = type(v)
            if t is float:
                if not math.isfinite(v):
                    raise self.fail(path, f"{label} has a non-finite coordinate ({v})")
            elif t is not int:
                raise self.fail(path, f"{label} has a non-numeric coordinate {json_text(v)}")
            elif not _INT64_MIN <= v <= _INT64_MAX:
                raise self.fail(path, f"{label} has an out-of-range coordinate ({v})")


def _good_positions(array: np.ndarray) -> bool:
    return array.ndim == 2 and 2 <= array.shape[1] <= 3 and bool(np.isfinite(array).all())


def _has_non_number(coords: Any) -> bool:
    """True when the coordinates hold a boolean, null, string or object (numpy would have converted them)."""
    try:
        return _NOT_A_NUMBER.search(orjson.dumps(coords)) is not None
    except TypeError:  # an integer beyond 64 bits
        return True


def _build(shapes: list[Shape]) -> np.ndarray:
    """Build all geometries, vectorised per (type, dimension)."""
    out = np.empty(len(shapes), dtype=object)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (kind, dim, _) in enumerate(shapes):
        groups[(kind, dim)].append(i)
    for (kind, _), indices in groups.items():
        payloads = [shapes[i][2] for i in indices]
        if kind == "raw":
            texts = np.array([orjson.dumps(p) for p in payloads], dtype=object)
            out[indices] = _from_geojson(texts, indices)
        else:
            coords, offsets = _ragged(kind, payloads)
            out[indices] = shapely.from_ragged_array(_RAGGED_TYPES[kind], coords, offsets)
    return out


def _from_geojson(texts: np.ndarray, indices: list[int]) -> np.ndarray:
    try:
        return shapely.from_geojson(texts)
    except shapely.errors.GEOSException:
        for text, i in zip(texts, indices, strict=True):  # name the culprit (the checks should prevent this)
            try:
                shapely.from_geojson(text)
            except shapely.errors.GEOSException as exc:
                where = f"features[{i}].geometry"
                raise InvalidGeometry(f"{where}: {exc}", field=where, feature=i) from None
        raise


def _ragged(kind: str, payloads: list[Any]) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """Flatten nested coordinate arrays into shapely's ragged layout (coords + offsets, innermost first)."""
    if kind == "Point":
        return np.concatenate(payloads), None
    if kind in ("LineString", "MultiPoint"):
        return np.concatenate(payloads), (_offsets(len(a) for a in payloads),)
    if kind in ("Polygon", "MultiLineString"):
        parts = [a for p in payloads for a in p]
        return np.concatenate(parts), (_offsets(len(a) for a in parts), _offsets(len(p) for p in payloads))
    polygons = [p for mp in payloads for p in mp]
    rings = [r for p in polygons for r in p]
    offsets = (_offsets(len(r) for r in rings), _offsets(len(p) for p in polygons), _offsets(len(m) for m in payloads))
    return np.concatenate(rings), offsets


def _offsets(lengths: Iterable[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.fromiter(lengths, dtype=np.int64))]).astype(np.int64)


def _properties_frame(properties: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Turn feature properties into columns, keeping int/float/str/bool/None types (nested -> object)."""
    keys: dict[str, None] = {}
    for props in properties:
        keys.update(dict.fromkeys(props))
    notes: list[str] = []
    columns: dict[str, Any] = {}
    for key in keys:
        name = key
        if key == "geometry":  # reserved for the geometry column
            n = 1
            while f"geometry_{n}" in keys:
                n += 1
            name = f"geometry_{n}"
            notes.append(f"property 'geometry' was renamed to '{name}' (the name is reserved)")
        columns[name] = _column([props.get(key) for props in properties])
    return pd.DataFrame(columns, index=pd.RangeIndex(len(properties))), notes


def _column(values: list[Any]) -> Any:
    kinds = {type(v) for v in values}
    has_null = type(None) in kinds
    kinds.discard(type(None))
    if kinds == {bool}:
        return pd.array(values, dtype="boolean") if has_null else np.array(values, dtype=bool)
    if kinds == {int} and all(_INT64_MIN <= v <= _INT64_MAX for v in values if v is not None):
        return pd.array(values, dtype="Int64") if has_null else np.array(values, dtype=np.int64)
    if kinds and kinds <= {int, float}:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if kinds == {str}:
        return pd.array(values, dtype="str")
    return pd.Series(values, dtype=object).array


def json_type(value: Any) -> str:
    """Name the JSON type of a parsed value (for error messages)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, int | float) else type(value).__name__


def json_text(value: Any) -> str:
    """Render a parsed value compactly as JSON (for error messages)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)
