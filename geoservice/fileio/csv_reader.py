"""Reading CSV uploads: attributes through pyogrio, geometry (WKT or x/y columns) built with shapely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import shapely
from geopandas import GeoDataFrame, GeoSeries

from geoservice.analysis.crs import parse_crs
from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS
from geoservice.errors import InvalidInput
from geoservice.fileio.archives import quoted
from geoservice.fileio.reading import USE_ARROW, ReadResult, without_path

_WKT_NAMES = ("wkt", "geometry", "geom", "the_geom")
_X_NAMES = ("lon", "lng", "long", "longitude", "x")
_Y_NAMES = ("lat", "latitude", "y")


def read_csv(
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
            path, read_geometry=False, use_arrow=USE_ARROW, AUTODETECT_TYPE="YES", AUTODETECT_SIZE_LIMIT="0"
        )
    except Exception as exc:
        reason = without_path(str(exc), path, filename)
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
