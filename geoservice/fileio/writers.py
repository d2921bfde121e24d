"""Export a dataset batch by batch: GeoJSON / GeoJSON text sequence as a byte stream, other formats as files.

Every function takes ``batches``: an iterable of ``(GeoDataFrame, ids)`` pairs, where ``ids`` are the
service's feature ids of the batch's rows, so a 100k-feature export never sits whole in memory.

Decisions:

* Precision: GeoJSON coordinates are written by ``shapely.to_geojson`` (GEOS writes the shortest
  representation that reads back to the same double, checked by tests); GPKG, Shapefile and FlatGeobuf
  store doubles, so coordinates survive export + import bit for bit.
* Files are written in two GDAL passes: each batch is appended to a staging GeoPackage, then GDAL
  streams the staging layer into the target format (``pyogrio.raw.open_arrow`` -> ``write_arrow``
  through the Arrow C stream interface; pyarrow is not needed). Appending directly does not work well:
  pyogrio cannot append a ``fid`` column to an existing GeoPackage layer, and each FlatGeobuf append
  rewrites the whole file.
* ``fid``: in a GeoPackage the ids *are* the feature ids (GDAL uses a column named ``fid`` as the FID
  column), so QGIS and ``read_dataframe(fid_as_index=True)`` show the service's ids; our importer ignores
  them, as it ignores every input feature id. Shapefile and FlatGeobuf have no stored FID, so the ids are
  an ordinary integer attribute ``fid`` there (it comes back as an attribute on re-import). An attribute
  of the dataset that is itself called ``fid`` is written as ``fid_1``.
* Layer geometry type: one type -> that type. Single and multi of one family (Polygon + MultiPolygon):
  GeoPackage declares the generic GEOMETRY type and every feature keeps its own type; a Shapefile layer
  is declared multi (Shapefile polygons are multi-part anyway); FlatGeobuf layers are strictly typed, so
  features are promoted to multi (``ST_Multi`` in the conversion SQL). A Shapefile cannot hold mixed
  families (``UnsupportedGeometryType``).
* FlatGeobuf gets its spatial index unless a geometry is null or empty (GDAL refuses those with an
  index); with the index, features are stored in Hilbert order: the ``fid`` attribute keeps the link.
* Shapefile limits, reported through ``on_warning`` when GDAL hits them: field names are cut to 10
  characters (GDAL "launders" them) and text to 254 characters; floats are stored as decimal text
  (about 15 significant digits), datetimes as ISO text, null text reads back as ""; GDAL rewrites rings
  clockwise and a single-part multi geometry reads back as single. Coordinates themselves are exact.
* Object columns holding dicts or lists are written to files as JSON text. Datetimes are written as UTC
  with millisecond precision (the staging GeoPackage's rule; naive datetimes are taken as UTC).
"""

from __future__ import annotations

import base64
import decimal
import math
import re
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyogrio
import shapely
from geopandas import GeoDataFrame, GeoSeries
from pyogrio.raw import open_arrow, write_arrow
from pyproj import CRS

from geoservice.analysis.errors import UnsupportedGeometryType

Batches = Iterable[tuple[GeoDataFrame, Sequence[int]]]


class ExportFormat(NamedTuple):
    media_type: str
    extension: str


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "geojson": ExportFormat("application/geo+json", ".geojson"),
    "geojsonseq": ExportFormat("application/geo+json-seq", ".geojsonl"),
    "gpkg": ExportFormat("application/geopackage+sqlite3", ".gpkg"),
    "shp": ExportFormat("application/zip", ".zip"),
    "fgb": ExportFormat("application/flatgeobuf", ".fgb"),
}
_DRIVERS = {"gpkg": "GPKG", "shp": "ESRI Shapefile", "fgb": "FlatGeobuf"}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_STAGE_LAYER = "stage"
_STAGE_GEOMETRY = "__gs_geom"
_TYPE_NAMES = ("Point", "LineString", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
_FAMILY = (0, 1, 1, 2, 0, 1, 2, -1)
_LAUNDERED = re.compile(r"Normalized/laundered field name: '(.*)' to '(.*)'")
_TRUNCATED = re.compile(r"Value '.*' of field (.+) has been truncated to (\d+) characters", re.DOTALL)


# ----------------------------------------------------------------------------------------- GeoJSON


def geojson_crs_member(crs: Any) -> dict[str, Any] | None:
    """Return the old-style GeoJSON ``crs`` member for ``crs``, or None for OGC:CRS84 (the RFC 7946 default).

    GDAL, QGIS and our importer honour ``{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2263"}}``.
    """
    crs = CRS.from_user_input(crs)
    authority = crs.to_authority(min_confidence=100)
    if authority == ("OGC", "CRS84"):
        return None
    name = f"urn:ogc:def:crs:{authority[0]}::{authority[1]}" if authority else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def geojson_feature_bytes(batch: GeoDataFrame, ids: Sequence[Any]) -> list[bytes]:
    """Serialise each row of ``batch`` as a GeoJSON Feature with ``"id"`` from ``ids``.

    Geometry: ``shapely.to_geojson`` (full precision, Z kept). Properties: every non-geometry column,
    with NaN/None/NaT/NA as null, numpy scalars as numbers, datetimes as ISO 8601 text, Decimal as an
    exact JSON number.
    """
    if len(ids) != len(batch):
        raise ValueError(f"{len(ids)} ids for {len(batch)} rows")
    geometries = shapely.to_geojson(np.asarray(batch.geometry.array, dtype=object))
    attributes = batch.drop(columns=[batch.geometry.name])
    records = attributes.to_dict("records") if len(attributes.columns) else [{}] * len(batch)
    features = []
    for fid, geometry, record in zip(ids, geometries, records, strict=True):
        features.append(
            b'{"type":"Feature","id":'
            + orjson.dumps(fid, default=_json_default, option=_JSON_OPTIONS)
            + b',"geometry":'
            + (b"null" if geometry is None else geometry.encode())
            + b',"properties":'
            + orjson.dumps(record, default=_json_default, option=_JSON_OPTIONS)
            + b"}"
        )
    return features


def stream_geojson(
    batches: Batches, *, crs_member: dict[str, Any] | None, extra_members: dict[str, Any] | None = None
) -> Iterator[bytes]:
    """Yield a GeoJSON FeatureCollection in chunks: the head, one chunk per batch, then the tail.

    Args:
        batches: ``(GeoDataFrame, ids)`` pairs.
        crs_member: the ``crs`` member (see ``geojson_crs_member``); None for CRS84 data.
        extra_members: more top-level members (e.g. ``{"name": ...}``), written before ``features``.
    """
    head: dict[str, Any] = {"type": "FeatureCollection"}
    if crs_member is not None:
        head["crs"] = crs_member
    for key, value in (extra_members or {}).items():
        if key in ("type", "features", "crs"):
            raise ValueError(f"extra member {key!r} is reserved")
        head[key] = value
    yield orjson.dumps(head, default=_json_default, option=_JSON_OPTIONS)[:-1] + b',"features":['
    separator = b""
    for batch, ids in batches:
        features = geojson_feature_bytes(batch, ids)
        if features:
            yield separator + b",".join(features)
            separator = b","
    yield b"]}"


def stream_geojsonseq(batches: Batches) -> Iterator[bytes]:
    """Yield RFC 8142 GeoJSON text sequence records (RS, Feature, LF), one chunk per batch."""
    for batch, ids in batches:
        features = geojson_feature_bytes(batch, ids)
        if features:
            yield b"".join(b"\x1e" + feature + b"\n" for feature in features)


def _json_default(value: Any) -> Any:
    """Serialise what orjson does not know (it already handles NaN as null, numpy, datetime, UUID)."""
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value)) if value.is_finite() else None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# ---------------------------------------------------------------------------------- file formats


@dataclass
class _Stats:
    """What the staged features look like, to choose the target layer's geometry type."""

    types: set[int] = field(default_factory=set)
    has_z: bool = False
    has_2d: bool = False
    has_gaps: bool = False  # null or empty geometries

    def add(self, geoms: np.ndarray) -> None:
        type_ids = shapely.get_type_id(geoms)
        self.types.update(int(t) for t in np.unique(type_ids[type_ids >= 0]))
        gaps = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        z = shapely.has_z(geoms)
        self.has_z = self.has_z or bool(z.any())
        self.has_2d = self.has_2d or bool((~z & ~gaps).any())
        self.has_gaps = self.has_gaps or bool(gaps.any())


def write_file(
    batches: Batches,
    fmt: str,
    *,
    directory: Path,
    layer_name: str,
    crs: Any,
    on_warning: Callable[[str], None] | None = None,
) -> Path:
    """Write the batches as a GeoPackage (``gpkg``), zipped Shapefile (``shp``) or FlatGeobuf (``fgb``).

    Args:
        batches: ``(GeoDataFrame, ids)`` pairs with the same columns; give at least one (possibly empty)
            batch so that an empty dataset still gets its attribute schema.
        fmt: ``"gpkg"``, ``"shp"`` or ``"fgb"``.
        directory: where the file is written (the caller owns and cleans it).
        layer_name: layer and file name (unsafe characters become ``_``).
        crs: the dataset's CRS (anything ``pyproj.CRS.from_user_input`` accepts).
        on_warning: called with each data-loss warning (e.g. a Shapefile field name cut to 10 chars).

    Returns:
        The written file (``<layer>.gpkg``, ``<layer>.zip`` or ``<layer>.fgb``).

    Raises:
        UnsupportedGeometryType: mixed geometry families for a format that cannot hold them.
    """
    if fmt not in _DRIVERS:
        raise ValueError(f"write_file writes {sorted(_DRIVERS)}, not {fmt!r}")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", layer_name) or "layer"
    staging = directory / f".staging-{uuid.uuid4().hex}.gpkg"
    target = directory / (f"{name}_shp/{name}.shp" if fmt == "shp" else f"{name}.{fmt}")
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = _stage(batches, staging, CRS.from_user_input(crs), notes)
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert(staging, target, fmt, stats, name)
        notes.extend(_friendly(str(w.message)) for w in caught if issubclass(w.category, RuntimeWarning))
    except BaseException:  # no half-written file is left behind
        if fmt == "shp":
            shutil.rmtree(target.parent, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        raise
    finally:
        staging.unlink(missing_ok=True)
    for note in dict.fromkeys(notes):
        if on_warning is not None:
            on_warning(note)
    return _zip_folder(target.parent, directory / f"{name}.zip") if fmt == "shp" else target


def _stage(batches: Batches, staging: Path, crs: CRS, notes: list[str]) -> _Stats:
    stats = _Stats()
    schema: GeoDataFrame | None = None
    created = False
    for batch, ids in batches:
        frame = _file_frame(batch, ids, crs, notes)
        if not len(frame):
            schema = frame if schema is None else schema
            continue
        stats.add(np.asarray(frame.geometry.array, dtype=object))
        _append(frame, staging, create=not created)
        created = True
    if not created:
        empty = GeoDataFrame({"fid": np.array([], dtype=np.int64)}, geometry=GeoSeries([], crs=crs))
        _append(schema if schema is not None else empty, staging, create=True)
    return stats


def _append(frame: GeoDataFrame, staging: Path, *, create: bool) -> None:
    pyogrio.write_dataframe(
        frame,
        staging,
        layer=_STAGE_LAYER,
        driver="GPKG",
        append=not create,
        geometry_type="Unknown",
        promote_to_multi=False,
        # a regular "fid" column needs another FID column name; no index: the staging file is temporary
        layer_options={"FID": "__gs_rowid", "GEOMETRY_NAME": _STAGE_GEOMETRY, "SPATIAL_INDEX": "NO"}
        if create
        else None,
    )


def _file_frame(batch: GeoDataFrame, ids: Sequence[Any], crs: CRS, notes: list[str]) -> GeoDataFrame:
    """Return the batch as a GeoDataFrame: ``fid`` first, attributes (nested values as JSON), geometry."""
    if len(ids) != len(batch):
        raise ValueError(f"{len(ids)} ids for {len(batch)} rows")
    columns: dict[str, Any] = {"fid": np.asarray(ids, dtype=np.int64)}
    for column in batch.columns:
        if column == batch.geometry.name:
            continue
        values = batch[column]
        out = str(column)
        if out.lower() == "fid":
            out = "fid_1"
            notes.append(f"attribute {column!r} was written as 'fid_1' ('fid' holds the feature id)")
        if values.dtype == object:
            values = values.map(_text_value)
        elif isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC")  # GeoPackage stores UTC; other offsets draw GDAL warnings
        columns[out] = values.array
    geometry = GeoSeries(np.asarray(batch.geometry.array, dtype=object), crs=crs)
    return GeoDataFrame(columns, geometry=geometry)


def _text_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS).decode()
    return value if isinstance(value, str) else str(value)


def _convert(staging: Path, target: Path, fmt: str, stats: _Stats, layer: str) -> None:
    """Stream the staging layer into ``target`` with GDAL (one pass, bounded memory)."""
    geometry_type, promote = _layer_type(fmt, stats)
    expression = _quote(_STAGE_GEOMETRY)
    if promote:  # FlatGeobuf layers are strictly typed (SpatiaLite SQL functions, bundled with GDAL)
        expression = f"ST_Multi({expression})"
    if fmt == "fgb" and stats.has_z and stats.has_2d:
        expression = f"CastToXYZ({expression})"  # ... and strictly 2D or 3D; a Shapefile does the same
    sql = None
    if expression != _quote(_STAGE_GEOMETRY):
        fields = "".join(f"{_quote(f)}, " for f in pyogrio.read_info(staging, layer=_STAGE_LAYER)["fields"])
        sql = f"SELECT {fields}{expression} AS {_quote(_STAGE_GEOMETRY)} FROM {_STAGE_LAYER}"
    options = {"fgb": {"SPATIAL_INDEX": "NO" if stats.has_gaps else "YES"}, "shp": {"ENCODING": "UTF-8"}}
    with open_arrow(staging, layer=None if sql else _STAGE_LAYER, sql=sql, use_pyarrow=False) as (meta, reader):
        write_arrow(
            reader,
            target,
            layer=layer,
            driver=_DRIVERS[fmt],
            geometry_name=meta["geometry_name"] or _STAGE_GEOMETRY,
            geometry_type=geometry_type,
            crs=meta["crs"],
            layer_options=options.get(fmt),
        )


def _layer_type(fmt: str, stats: _Stats) -> tuple[str, bool]:
    """Return the target layer's geometry type and whether features must be promoted to multi."""
    z = " Z" if stats.has_z else ""
    families = {_FAMILY[t] for t in stats.types}
    if not stats.types:
        return ("Point" if fmt == "shp" else "Unknown"), False
    if len(families) > 1 or -1 in families:
        kinds = ", ".join(sorted("GeometryCollection" if t == 7 else _TYPE_NAMES[t] for t in stats.types))
        if fmt == "shp":
            raise UnsupportedGeometryType(f"a Shapefile holds one geometry type; this dataset has {kinds}")
        if fmt == "fgb" and z:
            raise UnsupportedGeometryType(f"FlatGeobuf cannot hold mixed 3D geometry types ({kinds})")
        return "Unknown", False
    if fmt == "gpkg" and stats.has_z and stats.has_2d:
        return "Unknown", False  # a GEOMETRY column keeps 2D and 3D features as they are
    if len(stats.types) == 1 or {_TYPE_NAMES[t] for t in stats.types} == {"LineString"}:
        return _TYPE_NAMES[min(stats.types)] + z, False
    multi = _TYPE_NAMES[4 + families.pop()] + z
    if fmt == "gpkg" or (fmt == "fgb" and not z):
        # An untyped layer lets each feature keep its own type (Polygon stays Polygon), so an export
        # imported again is identical; FlatGeobuf supports this (2D) with header type Unknown.
        return "Unknown", False
    return multi, fmt == "fgb"


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, arcname=path.name)
    shutil.rmtree(folder, ignore_errors=True)
    return archive


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _friendly(message: str) -> str:
    """Rephrase GDAL's data-loss warnings (and keep the user's long values out of them)."""
    if match := _LAUNDERED.search(message):
        return f"field {match.group(1)!r} was renamed to {match.group(2)!r} (Shapefile field names are limited)"
    if match := _TRUNCATED.search(message):
        return f"text in field {match.group(1)!r} was cut to {match.group(2)} characters (Shapefile limit)"
    return message
