"""Reading GeoPackage, zipped-Shapefile and FlatGeobuf layers through pyogrio (GDAL)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from geopandas import GeoDataFrame

from geoservice.analysis.errors import EmptyInput, InvalidGeometry
from geoservice.errors import GeoserviceError, InvalidInput
from geoservice.fileio.archives import quoted
from geoservice.fileio.reading import FORMAT_NAMES, USE_ARROW, ReadResult, resolve_crs, without_path


def read_ogr(path: Path, filename: str, fmt: str, *, layer: str | None, crs: str | None) -> ReadResult:
    """Read a GeoPackage, Shapefile or FlatGeobuf layer through pyogrio."""
    notes: list[str] = []
    try:
        chosen = _choose_layer(path, filename, layer) if fmt != "shp" else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = pyogrio.read_info(path, layer=chosen)
            df = pyogrio.read_dataframe(path, layer=chosen, use_arrow=USE_ARROW, on_invalid="ignore")
        notes.extend(without_path(str(w.message), path, filename) for w in caught if w.category is RuntimeWarning)
        source = f"{filename}" + (f" (layer {chosen!r})" if chosen else "")
        if not isinstance(df, GeoDataFrame):
            raise InvalidInput(f"{source} has no geometry column", field="layer" if chosen else "file")
        if len(df) == 0:
            raise EmptyInput(f"{source} has no features", field="file")
        _raise_unparsed(path, chosen, df)
    except GeoserviceError:
        raise
    except Exception as exc:  # pyogrio/GDAL/GEOS errors: the file is broken, not the service
        reason = without_path(str(exc), path, filename)
        raise InvalidInput(f"could not read {filename} as {FORMAT_NAMES[fmt]}: {reason}", field="file") from None
    hint = " (no .prj file in the zip)" if fmt == "shp" else ""
    target = resolve_crs(df.crs, crs, source=source, hint=hint)
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
