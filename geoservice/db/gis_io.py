"""The only place where GeoDataFrames meet the database: binary COPY in, one WKB query out.

Load: ``COPY ... FROM STDIN (FORMAT BINARY)`` of EWKB and pre-serialised JSONB (not per-row ORM adds,
not ``to_postgis``). Read: one binary cursor of ``ST_AsBinary`` + ``shapely.from_wkb`` (not
``read_postgis``). Both run on the session's own connection, so they share its transaction.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import shapely
from geopandas import GeoDataFrame
from psycopg import sql
from pyproj import CRS
from sqlalchemy.orm import Session

GEOJSON_TYPES = {
    0: "Point",
    1: "LineString",
    2: "LineString",  # LinearRing
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}
NAME_COLUMNS = ("name", "NAME", "Name")
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def raw_connection(session: Session) -> psycopg.Connection[Any]:
    """Return the psycopg connection under the session (same transaction)."""
    dbapi = session.connection().connection.driver_connection
    assert isinstance(dbapi, psycopg.Connection)
    return dbapi


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _clean(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA:  # pd.NA: a missing nullable int/bool (not "<NA>")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def attribute_records(gdf: GeoDataFrame) -> list[bytes]:
    """Serialise each row's attributes (all but the geometry) to JSONB binary (version byte + JSON)."""
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if not columns:
        return [b"\x01{}"] * len(gdf)
    values = [gdf[c].to_numpy(dtype=object) for c in columns]
    out = []
    for row in zip(*values, strict=True):
        record = {c: _clean(v) for c, v in zip(columns, row, strict=True)}
        out.append(b"\x01" + orjson.dumps(record, default=_json_default, option=_ORJSON_OPTS))
    return out


def feature_names(gdf: GeoDataFrame) -> Sequence[str | None]:
    """Return each feature's display name (from a ``name`` attribute when there is one)."""
    for column in NAME_COLUMNS:
        if column in gdf.columns:
            return [None if _clean(v) is None else str(v) for v in gdf[column].to_numpy(dtype=object)]
    return [None] * len(gdf)


def partition_name(dataset_id: uuid.UUID) -> str:
    """The name of a dataset's ``spatial_data`` partition."""
    return f"spatial_data_p_{dataset_id.hex}"


def copy_features(
    session: Session,
    dataset_id: uuid.UUID,
    gdf: GeoDataFrame,
    *,
    srid: int,
    crs_label: str,
    fids: Sequence[int] | np.ndarray | None = None,
) -> int:
    """Bulk-load ``gdf`` as the dataset's ``spatial_data`` partition; return the row count.

    The rows go by binary COPY into a new table with no index, which is then indexed once (GiST,
    primary key, fid) and attached as the dataset's partition: no per-row index or foreign-key work.
    Everything happens in the session's transaction, so a failure leaves nothing behind. Fids are
    1..n unless given.
    """
    geoms = shapely.set_srid(np.asarray(gdf.geometry.array, dtype=object), srid)
    wkb = shapely.to_wkb(geoms, include_srid=True)
    types = [GEOJSON_TYPES[t] for t in shapely.get_type_id(geoms)]
    attrs = attribute_records(gdf)
    names = feature_names(gdf)
    ids = [int(f) for f in fids] if fids is not None else list(range(1, len(wkb) + 1))
    conn = raw_connection(session)
    part = sql.Identifier(partition_name(dataset_id))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE spatial_data INCLUDING DEFAULTS INCLUDING GENERATED)").format(part))
    statement = sql.SQL(
        "COPY {} (dataset_id, fid, name, data_type, geometry, attributes, crs) FROM STDIN (FORMAT BINARY)"
    ).format(part)
    with conn.cursor().copy(statement) as copy:
        # geometry_recv takes EWKB; jsonb_recv takes version byte 1 + JSON text: both sent as raw bytes.
        copy.set_types(["uuid", "int4", "text", "text", "bytea", "bytea", "text"])
        for i in range(len(wkb)):
            copy.write_row((dataset_id, ids[i], names[i], types[i], wkb[i], attrs[i], crs_label))
    _attach(conn, part, dataset_id, srid)
    return len(wkb)


def index_and_attach(session: Session, dataset_id: uuid.UUID, srid: int) -> None:
    """Index a dataset's filled partition table once and attach it (a staged result becomes visible at commit)."""
    _attach(raw_connection(session), sql.Identifier(partition_name(dataset_id)), dataset_id, srid)


def _attach(conn: psycopg.Connection[Any], part: sql.Identifier, dataset_id: uuid.UUID, srid: int) -> None:
    value = sql.Literal(str(dataset_id))
    for ddl in (
        "CREATE INDEX ON {p} USING gist (geometry)",
        "ALTER TABLE {p} ADD PRIMARY KEY (dataset_id, id)",
        "ALTER TABLE {p} ADD UNIQUE (dataset_id, fid)",
        # The dataset's SRID, checked for every feature now and for any row written later.
        "ALTER TABLE {p} ADD CONSTRAINT srid_matches_dataset CHECK (ST_SRID(geometry) = {srid})",
        # Lets ATTACH skip its scan for rows outside the partition's value.
        "ALTER TABLE {p} ADD CHECK (dataset_id = {v})",
        "ALTER TABLE spatial_data ATTACH PARTITION {p} FOR VALUES IN ({v})",
    ):
        conn.execute(sql.SQL(ddl).format(p=part, v=value, srid=sql.Literal(int(srid))))


def drop_features(session: Session, dataset_id: uuid.UUID, *, lock_timeout_ms: int = 5000) -> None:
    """Drop the dataset's partition (instead of deleting its rows one by one).

    Dropping a partition briefly locks the parent table; a bounded lock timeout turns a long wait
    behind a running export into an error the caller can retry, not a stall of every reader.
    """
    conn = raw_connection(session)
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(partition_name(dataset_id))))
    conn.execute("SET LOCAL lock_timeout = 0")


def frame_from_rows(
    rows: Sequence[tuple[int, bytes, dict[str, Any] | None]], crs: CRS, fields: Sequence[dict[str, Any]]
) -> tuple[GeoDataFrame, list[int]]:
    """Build a GeoDataFrame from (fid, wkb, attributes) rows, columns in the dataset's field order."""
    fids = [r[0] for r in rows]
    geoms = shapely.from_wkb([r[1] for r in rows])
    names = [f["name"] for f in fields]
    records = [r[2] or {} for r in rows]
    frame = pd.DataFrame.from_records(records, columns=names) if names else pd.DataFrame(index=range(len(rows)))
    frame = restore_types(frame, fields)
    gdf = GeoDataFrame(frame, geometry=geoms, crs=crs)
    gdf.index = pd.Index(fids, name="fid")
    return gdf, fids


def restore_types(frame: pd.DataFrame, fields: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Give attribute columns read from JSONB the pandas types of their recorded field types."""
    for field in fields:
        name, kind = field["name"], field.get("type")
        if name not in frame.columns:
            continue
        if kind == "int":
            frame[name] = pd.array(frame[name], dtype="Int64")
        elif kind == "float":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        elif kind == "bool":
            frame[name] = pd.array(frame[name], dtype="boolean")
        elif kind == "datetime":
            frame[name] = pd.to_datetime(frame[name], errors="coerce", utc=False, format="ISO8601")
        elif kind == "date":
            frame[name] = pd.to_datetime(frame[name], errors="coerce", format="ISO8601").dt.date
    return frame


def select_features_sql(where: sql.Composable, order_limit: sql.Composable) -> sql.Composed:
    """Compose the one feature query shape used by reads and exports."""
    return sql.SQL(
        "SELECT fid, ST_AsBinary(geometry), attributes FROM spatial_data WHERE {where} {order_limit}"
    ).format(where=where, order_limit=order_limit)


def read_features(
    session: Session,
    dataset_id: uuid.UUID,
    crs: CRS,
    fields: Sequence[dict[str, Any]],
    *,
    where: sql.Composable | None = None,
    params: dict[str, Any] | None = None,
    order_limit: sql.Composable | None = None,
) -> tuple[GeoDataFrame, list[int]]:
    """Read a dataset's features (optionally filtered) in one binary query."""
    clause = sql.SQL("dataset_id = %(dataset_id)s")
    if where is not None:
        clause = sql.SQL("{} AND {}").format(clause, where)
    query = select_features_sql(clause, order_limit or sql.SQL("ORDER BY fid"))
    with raw_connection(session).cursor(binary=True) as cur:
        cur.execute(query, {"dataset_id": dataset_id, **(params or {})})
        rows = cur.fetchall()
    return frame_from_rows(rows, crs, fields)


def iter_feature_batches(
    session: Session, dataset_id: uuid.UUID, crs: CRS, fields: Sequence[dict[str, Any]], *, batch_size: int
) -> Iterator[tuple[GeoDataFrame, list[int]]]:
    """Stream a dataset's features in fid order, ``batch_size`` rows at a time (server-side cursor)."""
    conn = raw_connection(session)
    query = select_features_sql(sql.SQL("dataset_id = %(dataset_id)s"), sql.SQL("ORDER BY fid"))
    with conn.cursor(name=f"export_{uuid.uuid4().hex}", binary=True) as cur:
        cur.itersize = batch_size
        cur.execute(query, {"dataset_id": dataset_id})
        while rows := cur.fetchmany(batch_size):
            yield frame_from_rows(rows, crs, fields)
