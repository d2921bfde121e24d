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

from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from geopandas import GeoDataFrame, GeoSeries
from pyproj import CRS

from geoservice.analysis.crs import CRS84, parse_crs
from geoservice.analysis.errors import UnknownCRS
from geoservice.errors import InvalidInput, UnsupportedMediaType
from geoservice.fileio.archives import extracted_shapefile
from geoservice.fileio.csv_reader import read_csv
from geoservice.fileio.geojson import parse_feature_collection
from geoservice.fileio.ogr_reader import read_ogr
from geoservice.fileio.reading import FORMAT_NAMES, ReadResult, resolve_crs

__all__ = ["FORMAT_NAMES", "ReadResult", "read_feature_collection", "read_upload"]

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


# --------------------------------------------------------------------------------------------- CRS


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
        target = resolve_crs(member, crs, source="the GeoJSON")
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
        return read_csv(path, filename, crs=crs, x_field=x_field, y_field=y_field, wkt_field=wkt_field)
    return read_ogr(path, filename, fmt, layer=layer, crs=crs)


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
        result = read_ogr(shp, filename, "shp", layer=None, crs=crs)
    result.layer = name
    return result
