"""Shared by the readers: ``ReadResult``, format names, the declared-vs-given CRS rule and path scrubbing."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from geopandas import GeoDataFrame
from pyproj import CRS

from geoservice.analysis.crs import crs_label, parse_crs
from geoservice.analysis.errors import MissingCRS
from geoservice.errors import InvalidInput
from geoservice.text import bad_text

USE_ARROW = importlib.util.find_spec("pyarrow") is not None

FORMAT_NAMES = {
    "geojson": "GeoJSON",
    "geojsonseq": "GeoJSON text sequence",
    "gpkg": "GeoPackage",
    "shp": "zipped Shapefile",
    "csv": "CSV",
    "fgb": "FlatGeobuf",
}


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


def resolve_crs(declared: CRS | None, given: str | None, *, source: str, hint: str = "") -> CRS:
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


def without_path(message: str, path: Path, filename: str) -> str:
    """Keep server paths (the upload's temporary location) out of messages sent to the client."""
    return message.replace(str(path), filename).replace(f"{path.parent}/", "")


def safe_upload_name(raw: str) -> str:
    """An uploaded file's own name, safe to create in a temporary folder (its extension tells the format)."""
    name = PurePosixPath(raw.replace("\\", "/")).name
    if name in ("", ".", "..") or bad_text(name):
        raise InvalidInput(f"file: {raw!r} is not a usable file name; send the file under its own name "
                           "(e.g. countries.gpkg)", field="file")
    return re.sub(r"[^\w.\-]", "_", name)
