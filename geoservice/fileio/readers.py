"""Read a GeoJSON body or an uploaded file into a GeoDataFrame with its CRS, or fail precisely.

Decisions (issue "dataset import"):

* GeoJSON (``.geojson``/``.json``) and GeoJSON text sequences (``.geojsonl``/``.geojsons``/
  ``.geojsonseq``) are parsed with orjson and checked by ``read_feature_collection``
  (``fileio.geojson``), not by GDAL: GDAL closes unclosed rings silently and cannot say which feature
  is broken. The document is in memory while it is parsed; the upload limit bounds it.
* GeoPackage, zipped Shapefile and FlatGeobuf are read through pyogrio (with Arrow when pyarrow is
  installed). CSV attributes are read through pyogrio too (``AUTODETECT_TYPE=YES`` over the whole
  file), but the geometry (WKT or x/y columns) is built with shapely, so a bad row is named by its index
  and numbers are parsed exactly; the geometry columns are dropped (``KEEP_GEOM_COLUMNS=NO`` semantics).
* CRS: a GeoJSON without a ``crs`` member is OGC:CRS84 (RFC 7946) unless ``crs`` is given; an old-style
  ``"crs": {"type": "name", ...}`` member is honoured. A file that declares a CRS keeps it; an explicit
  ``crs`` is then accepted only if it is the same CRS (axis order aside), else ``InvalidInput`` 422
  (``field="crs"``): coordinates are never silently reinterpreted. CSV, and files without a CRS, need
  ``crs`` (``MissingCRS``).
* Zip uploads: see ``fileio.archives`` (413 over the size limit, 422 for a zip bomb, an escaping entry
  name or a broken archive).
* Feature ids in the input are ignored (the service assigns fids); GeoPackage FIDs are not read. A plain
  attribute called ``fid`` (e.g. from our own Shapefile/FlatGeobuf export) stays an attribute.
* Errors about the upload as a whole use ``field="file"`` (the multipart field name); pyogrio/GDAL
  exceptions never escape: they become ``InvalidInput`` "could not read <file> as <format>: <reason>".
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyogrio
import pyogrio.raw
import shapely
from geopandas import GeoDataFrame, GeoSeries
from pyproj import CRS

from geoservice.analysis.crs import CRS84, crs_label, parse_crs
from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS, UnknownCRS
from geoservice.errors import GeoserviceError, InvalidInput, UnsupportedMediaType
from geoservice.fileio.archives import extracted_shapefile, quoted
from geoservice.fileio.geojson import parse_feature_collection

_USE_ARROW = importlib.util.find_spec("pyarrow") is not None

FORMAT_NAMES = {
    "geojson": "GeoJSON",
    "geojsonseq": "GeoJSON text sequence",
    "gpkg": "GeoPackage",
    "shp": "zipped Shapefile",
    "csv": "CSV",
    "fgb": "FlatGeobuf",
}
_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".geojsonl": "geojsonseq",
    ".geojsons": "geojsonseq",
    ".geojsonseq": "geojsonseq",
    ".gpkg": "gpkg",
    ".zip": "shp",
    ".csv": "csv",
    ".fgb": "fgb",
}
_WKT_NAMES = ("wkt", "geometry", "geom", "the_geom")
_X_NAMES = ("lon", "lng", "long", "longitude", "x")
_Y_NAMES = ("lat", "latitude", "y")


@dataclass
class ReadResult:
    """A dataset read from a body or an upload.

    ``gdf`` has its CRS set, the geometry in column ``"geometry"``, attributes as columns and index
    0..n-1 in input order. ``source_format`` is one of ``FORMAT_NAMES``; ``layer`` is the GeoPackage
    layer or Shapefile name that was read; ``warnings`` are human-readable notes (renamed columns, GDAL
    warnings) worth showing to the user.
    """

    gdf: GeoDataFrame
    source_format: str
    layer: str | None = None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- CRS


def _resolve_crs(declared: CRS | None, given: str | None, *, source: str, hint: str = "") -> CRS:
    """Return the declared CRS, or the given one when nothing is declared; refuse a conflict."""
    explicit = parse_crs(given, field="crs") if given is not None else None
    if declared is None:
        if explicit is None:
            raise MissingCRS(f"{source} has no CRS{hint}; pass crs (for example crs=EPSG:4326)", field="crs")
        return explicit
    if explicit is not None and not explicit.equals(declared, ignore_axis_order=True):
        raise InvalidInput(
            f"crs: {source} declares {crs_label(declared)} but crs={given!r} was given; "
            "omit crs or fix the file (coordinates are never reinterpreted)",
            field="crs",
        )
    return declared


def _crs_member(member: Any) -> CRS | None:
    """Parse an old-style GeoJSON ``crs`` member (``name`` or ``EPSG`` type); None when absent."""
    if member is None:
        return None
    props = member.get("properties") if isinstance(member, dict) else None
    kind = member.get("type") if isinstance(member, dict) else None
    if kind == "name" and isinstance(props, dict) and isinstance(props.get("name"), str):
        return parse_crs(props["name"], field="crs")
    if kind == "EPSG" and isinstance(props, dict) and isinstance(props.get("code"), int | str):
        return parse_crs(f"EPSG:{props['code']}", field="crs")
    raise UnknownCRS(
        'crs: unsupported crs member; use {"type": "name", "properties": {"name": "EPSG:2263"}} or the crs parameter',
        field="crs",
    )


# ---------------------------------------------------------------------------------- GeoJSON bodies


def read_feature_collection(obj: Any, *, crs: str | None) -> ReadResult:
    """Check a parsed GeoJSON FeatureCollection strictly and turn it into a GeoDataFrame.

    Args:
        obj: the parsed JSON value (``dict`` for a FeatureCollection).
        crs: CRS of the coordinates when the document has no ``crs`` member; default OGC:CRS84.

    Returns:
        A ``ReadResult`` with ``source_format="geojson"``. Geometry validity is not checked here:
        call ``validate_geometries`` next.

    Raises:
        InvalidInput: wrong structure (``type``, ``features``, a feature, its properties).
        EmptyInput: ``features`` is empty.
        InvalidGeometry: null geometry, unknown type, bad coordinates, unclosed or short ring
            (``field="features[i].geometry"``, ``feature=i``).
        UnknownCRS, MissingCRS, InvalidInput (``field="crs"``): see the module docstring.
    """
    attributes, geometries, notes = parse_feature_collection(obj)
    member = _crs_member(obj.get("crs"))
    if member is not None:
        target = _resolve_crs(member, crs, source="the GeoJSON")
    else:
        target = parse_crs(crs, field="crs") if crs is not None else CRS84
    gdf = GeoDataFrame(attributes, geometry=GeoSeries(geometries, index=attributes.index, crs=target))
    return ReadResult(gdf=gdf, source_format="geojson", layer=None, warnings=notes)


# ----------------------------------------------------------------------------------------- uploads


def read_upload(
    path: Path,
    filename: str,
    *,
    layer: str | None = None,
    crs: str | None = None,
    x_field: str | None = None,
    y_field: str | None = None,
    wkt_field: str | None = None,
    max_unpacked_bytes: int,
) -> ReadResult:
    """Read an uploaded file, choosing the reader from the file name and checking the magic bytes.

    Args:
        path: the upload on disk; a zip is extracted into a temporary directory next to it.
        filename: the client's file name (its extension selects the format).
        layer: GeoPackage layer, or Shapefile name inside a zip; needed when there are several.
        crs: CRS when the file has none (required for CSV); must agree with a declared CRS.
        x_field, y_field, wkt_field: CSV geometry columns; by default detected from common names.
        max_unpacked_bytes: limit on the total uncompressed size of a zip upload.

    Returns:
        The dataset; call ``validate_geometries`` on ``result.gdf`` next.

    Raises:
        GeoserviceError subclasses only (``UnsupportedMediaType`` 415, ``PayloadTooLarge`` 413, and
        422 errors); GDAL and parser errors are wrapped as ``InvalidInput``.
    """
    fmt = _sniff(path, filename)
    _check_options(fmt, layer=layer, x_field=x_field, y_field=y_field, wkt_field=wkt_field)
    if fmt in ("geojson", "geojsonseq"):
        return _read_geojson_file(path, filename, fmt, crs=crs)
    if fmt == "shp":
        return _read_zip(path, filename, layer=layer, crs=crs, max_unpacked_bytes=max_unpacked_bytes)
    if fmt == "csv":
        return _read_csv(path, filename, crs=crs, x_field=x_field, y_field=y_field, wkt_field=wkt_field)
    return _read_ogr(path, filename, fmt, layer=layer, crs=crs)


def _sniff(path: Path, filename: str) -> str:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix in (".shp", ".shx", ".dbf", ".prj"):
        raise UnsupportedMediaType(
            "upload a Shapefile as one .zip holding its .shp, .shx, .dbf and .prj files", field="file"
        )
    with path.open("rb") as fh:
        head = fh.read(64)
    if not head:
        raise InvalidInput(f"{filename} is empty", field="file")
    fmt = _EXTENSIONS.get(suffix) or _format_from_magic(head)
    if fmt is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise UnsupportedMediaType(f"cannot tell the format of {filename!r}; upload one of {known}", field="file")
    sniffed = _format_from_magic(head)
    if fmt != "csv" and sniffed != fmt and not (fmt == "geojsonseq" and sniffed == "geojson"):
        raise InvalidInput(f"{filename} is not a {FORMAT_NAMES[fmt]} file (its content does not match)", field="file")
    return fmt


def _format_from_magic(head: bytes) -> str | None:
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "shp"
    if head[:3] == b"fgb" and head[4:7] == b"fgb":
        return "fgb"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return "geojson" if text[:1] in (b"{", b"\x1e") else None


def _check_options(fmt: str, **options: str | None) -> None:
    allowed = {"layer": ("gpkg", "shp", "fgb"), "x_field": ("csv",), "y_field": ("csv",), "wkt_field": ("csv",)}
    for name, value in options.items():
        if value is not None and fmt not in allowed[name]:
            raise InvalidInput(f"{name} does not apply to a {FORMAT_NAMES[fmt]} upload", field=name)


def _read_geojson_file(path: Path, filename: str, fmt: str, *, crs: str | None) -> ReadResult:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    where = ""
    try:
        if fmt == "geojson":
            obj = orjson.loads(data)
        else:  # RFC 8142 records (RS-prefixed) or newline-delimited features
            features = []
            for k, record in enumerate(r for r in data.replace(b"\x1e", b"\n").split(b"\n") if r.strip()):
                where = f"record {k}: "
                features.append(orjson.loads(record))
            obj = {"type": "FeatureCollection", "features": features}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"could not read {filename} as {FORMAT_NAMES[fmt]}: {where}{exc}", field="file") from None
    result = read_feature_collection(obj, crs=crs)
    result.source_format = fmt
    return result


def _read_zip(path: Path, filename: str, *, layer: str | None, crs: str | None, max_unpacked_bytes: int) -> ReadResult:
    with extracted_shapefile(path, filename, layer=layer, max_unpacked_bytes=max_unpacked_bytes) as (shp, name):
        result = _read_ogr(shp, filename, "shp", layer=None, crs=crs)
    result.layer = name
    return result


# ------------------------------------------------------------------------------ GDAL-read formats


def _read_ogr(path: Path, filename: str, fmt: str, *, layer: str | None, crs: str | None) -> ReadResult:
    """Read a GeoPackage, Shapefile or FlatGeobuf layer through pyogrio."""
    notes: list[str] = []
    try:
        chosen = _choose_layer(path, filename, layer) if fmt != "shp" else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = pyogrio.read_info(path, layer=chosen)
            df = pyogrio.read_dataframe(path, layer=chosen, use_arrow=_USE_ARROW, on_invalid="ignore")
        notes.extend(_without_path(str(w.message), path, filename) for w in caught if w.category is RuntimeWarning)
        source = f"{filename}" + (f" (layer {chosen!r})" if chosen else "")
        if not isinstance(df, GeoDataFrame):
            raise InvalidInput(f"{source} has no geometry column", field="layer" if chosen else "file")
        if len(df) == 0:
            raise EmptyInput(f"{source} has no features", field="file")
        _raise_unparsed(path, chosen, df)
    except GeoserviceError:
        raise
    except Exception as exc:  # pyogrio/GDAL/GEOS errors: the file is broken, not the service
        reason = _without_path(str(exc), path, filename)
        raise InvalidInput(f"could not read {filename} as {FORMAT_NAMES[fmt]}: {reason}", field="file") from None
    hint = " (no .prj file in the zip)" if fmt == "shp" else ""
    target = _resolve_crs(df.crs, crs, source=source, hint=hint)
    df = _normalise_dtypes(df, info).set_crs(target, allow_override=True)
    return ReadResult(gdf=df.reset_index(drop=True), source_format=fmt, layer=chosen, warnings=notes)


def _choose_layer(path: Path, filename: str, layer: str | None) -> str:
    layers = [(str(name), gtype) for name, gtype in pyogrio.list_layers(path)]
    spatial = [name for name, gtype in layers if gtype is not None]
    if layer is not None:
        if layer not in {name for name, _ in layers}:
            raise InvalidInput(
                f"layer {layer!r} is not in {filename}; its layers: {quoted(spatial)}",
                field="layer",
                extra={"layers": spatial},
            )
        return layer
    if len(spatial) == 1:
        return spatial[0]
    if not spatial:
        raise InvalidInput(f"{filename} has no layer with geometries", field="file")
    raise InvalidInput(
        f"{filename} has {len(spatial)} layers; choose one with layer: {quoted(spatial)}",
        field="layer",
        extra={"layers": spatial},
    )


def _raise_unparsed(path: Path, layer: str | None, df: GeoDataFrame) -> None:
    """GDAL gave WKB that GEOS refused (e.g. an unclosed ring): name the first such feature."""
    missing = np.flatnonzero(df.geometry.isna().to_numpy())
    if not len(missing):
        return
    _, _, wkb, _ = pyogrio.raw.read(path, layer=layer, columns=[], read_geometry=True)
    bad = [int(i) for i in missing if wkb[i] is not None]
    if not bad:
        return  # real nulls: validate_geometries reports them
    try:
        shapely.from_wkb(wkb[bad[0]])
        reason = "GEOS could not parse it"
    except shapely.errors.GEOSException as exc:
        reason = str(exc)
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    where = f"features[{bad[0]}].geometry"
    raise InvalidGeometry(f"{where}: invalid geometry: {reason}{more}", field=where, feature=bad[0])


def _normalise_dtypes(df: GeoDataFrame, info: dict[str, Any]) -> GeoDataFrame:
    """Give integer and boolean fields with nulls nullable dtypes instead of float/object."""
    for name, ogr_type, subtype in zip(info["fields"], info["ogr_types"], info["ogr_subtypes"], strict=True):
        if name not in df.columns:
            continue
        column = df[name]
        if subtype == "OFSTBoolean" and column.dtype != bool:
            df[name] = column.astype("boolean")
        elif ogr_type in ("OFTInteger", "OFTInteger64") and column.dtype.kind in "fO":
            df[name] = column.astype("Int64")
    return df


# -------------------------------------------------------------------------------------------- CSV


def _read_csv(
    path: Path,
    filename: str,
    *,
    crs: str | None,
    x_field: str | None,
    y_field: str | None,
    wkt_field: str | None,
) -> ReadResult:
    if crs is None:
        raise MissingCRS(
            f"{filename}: a CSV file has no CRS; pass crs (for example crs=EPSG:4326 for lon/lat degrees)",
            field="crs",
        )
    target = parse_crs(crs, field="crs")
    try:
        df = pyogrio.read_dataframe(
            path, read_geometry=False, use_arrow=_USE_ARROW, AUTODETECT_TYPE="YES", AUTODETECT_SIZE_LIMIT="0"
        )
    except Exception as exc:
        reason = _without_path(str(exc), path, filename)
        raise InvalidInput(f"could not read {filename} as CSV: {reason}", field="file") from None
    if len(df) == 0:
        raise EmptyInput(f"{filename} has no rows", field="file")
    used, geoms = _csv_geometry(df, filename, x_field=x_field, y_field=y_field, wkt_field=wkt_field)
    attributes = df.drop(columns=used).reset_index(drop=True)
    gdf = GeoDataFrame(attributes, geometry=GeoSeries(geoms, index=attributes.index, crs=target))
    return ReadResult(gdf=gdf, source_format="csv", layer=None, warnings=[])


def _csv_geometry(
    df: pd.DataFrame, filename: str, *, x_field: str | None, y_field: str | None, wkt_field: str | None
) -> tuple[list[str], np.ndarray]:
    columns = [str(c) for c in df.columns]
    if wkt_field is not None:
        return [_column_named(columns, wkt_field, "wkt_field", filename)], _wkt_geometries(df, wkt_field)
    if (x_field is None) != (y_field is None):
        missing = "y_field" if y_field is None else "x_field"
        raise InvalidInput(f"give both x_field and y_field ({missing} is missing)", field=missing)
    if x_field is not None and y_field is not None:
        x = _column_named(columns, x_field, "x_field", filename)
        y = _column_named(columns, y_field, "y_field", filename)
        return [x, y], _xy_geometries(df, x, y)
    lowered = {c.lower(): c for c in reversed(columns)}
    wkt = next((lowered[n] for n in _WKT_NAMES if n in lowered), None)
    if wkt is not None:
        return [wkt], _wkt_geometries(df, wkt)
    x = next((lowered[n] for n in _X_NAMES if n in lowered), None)
    y = next((lowered[n] for n in _Y_NAMES if n in lowered), None)
    if x is None or y is None:
        raise InvalidInput(
            f"{filename}: no geometry column found; pass wkt_field, or x_field and y_field "
            f"(columns: {quoted(columns)})",
            field="file",
        )
    return [x, y], _xy_geometries(df, x, y)


def _column_named(columns: list[str], name: str, option: str, filename: str) -> str:
    if name not in columns:
        raise InvalidInput(f"{option}: column {name!r} is not in {filename} (columns: {quoted(columns)})", field=option)
    return name


def _wkt_geometries(df: pd.DataFrame, column: str) -> np.ndarray:
    raw = df[column].astype(object)
    values = np.array([None if (v is None or v != v or v == "") else str(v) for v in raw], dtype=object)
    geoms = shapely.from_wkt(values, on_invalid="ignore")
    bad = np.flatnonzero(pd.isna(geoms) & pd.notna(values))
    if len(bad):
        i = int(bad[0])
        try:
            shapely.from_wkt(values[i])
            reason = "GEOS could not parse it"
        except shapely.errors.GEOSException as exc:
            reason = str(exc)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InvalidGeometry(
            f"features[{i}].geometry: WKT in column {column!r} could not be parsed: {reason}{more}",
            field=f"features[{i}].geometry",
            feature=i,
        )
    return geoms


def _xy_geometries(df: pd.DataFrame, x: str, y: str) -> np.ndarray:
    coords = []
    for name in (x, y):
        raw = df[name]
        values = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy()
        given = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
        bad = np.flatnonzero(np.isnan(values) & given)
        if len(bad):
            i = int(bad[0])
            raise InvalidGeometry(
                f"features[{i}].geometry: column {name!r} value {raw.iloc[i]!r} is not a number",
                field=f"features[{i}].geometry",
                feature=i,
            )
        empty = np.flatnonzero(~given)
        if len(empty):
            i = int(empty[0])
            raise InvalidGeometry(
                f"features[{i}].geometry: no coordinates (column {name!r} is empty)",
                field=f"features[{i}].geometry",
                feature=i,
            )
        coords.append(values)
    return shapely.points(coords[0], coords[1])


def _without_path(message: str, path: Path, filename: str) -> str:
    """Keep server paths (the upload's temporary location) out of messages sent to the client."""
    return message.replace(str(path), filename).replace(f"{path.parent}/", "")
