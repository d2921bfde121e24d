"""Streaming I/O of chunked tasks: read a chunk's rows, write its output into a staging table, publish it.

Reads are one binary cursor of WKB (``ST_AsBinary``) by feature id; attributes an operation does not change
are read as their JSONB wire bytes and written back as the same bytes (no JSON decoding or encoding in
Python). Writes are binary COPY into a staging table that no reader sees until the task is finalised: then
it is indexed once and attached as the result's ``spatial_data`` partition (``gis_io.index_and_attach``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format
from sqlalchemy.orm import Session

from geoservice.db.gis_io import GEOJSON_TYPES, partition_name, raw_connection

STAGE_PREFIX = "analysis_stage_"


class _RawJsonb(Loader):
    """JSONB as its binary wire form (version byte + JSON text), exactly what ``COPY ... (FORMAT BINARY)``
    takes back: attributes pass through untouched."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


@dataclass
class Rows:
    """Features read for a chunk, in fid order: ids, WKB, attributes (wire bytes or dicts) and names."""

    fids: np.ndarray
    wkb: list[bytes]
    attributes: list[Any]
    names: list[str | None] = field(default_factory=list)

    def geometries(self) -> np.ndarray:
        return shapely.from_wkb(self.wkb) if self.wkb else np.empty(0, dtype=object)


def stage_name(task_id: uuid.UUID) -> str:
    return f"{STAGE_PREFIX}{task_id.hex}"


def _attributes_sql(keys: Sequence[str] | None) -> sql.Composable:
    if keys is None:
        return sql.SQL("attributes")
    return sql.SQL("(SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(attributes) "
                   "WHERE key = ANY(%(keys)s))")  # (a plain SQL piece: its braces are not format fields)


def read_rows(session: Session, dataset_id: uuid.UUID, *, fids: Sequence[int] | None = None,
              bbox: Sequence[float] | None = None, srid: int | None = None, raw: bool,
              keys: Sequence[str] | None = None, where: sql.Composable | None = None,
              params: dict[str, Any] | None = None, table: str | None = None) -> Rows:
    """Read features of a dataset by id list and/or by bounding box (``&&``, the GiST index), in fid order.

    Args:
        raw: attributes as JSONB wire bytes (to copy back unchanged) instead of dicts.
        keys: only these attributes (None: all).
        where: a further filter (compiled, parameterised), with its ``params``.
        table: read a staging table instead of ``spatial_data``.
    """
    clauses: list[sql.Composable] = [sql.SQL("dataset_id = %(dataset_id)s")]
    values: dict[str, Any] = {"dataset_id": dataset_id, "keys": list(keys or []), **(params or {})}
    if fids is not None:
        clauses.append(sql.SQL("fid = ANY(%(fids)s)"))
        values["fids"] = [int(f) for f in fids]
    if bbox is not None:
        clauses.append(sql.SQL("geometry && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, %(srid)s)"))
        values.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3], srid=srid)
    if where is not None:
        clauses.append(where)
    query = sql.SQL("SELECT fid, ST_AsBinary(geometry), {}, name FROM {} WHERE {} ORDER BY fid").format(
        _attributes_sql(keys), sql.Identifier(table or "spatial_data"), sql.SQL(" AND ").join(clauses))
    with raw_connection(session).cursor(binary=True) as cur:
        if raw:
            cur.adapters.register_loader("jsonb", _RawJsonb)
        cur.execute(query, values)
        found = cur.fetchall()
    return Rows(np.fromiter((r[0] for r in found), np.int64, len(found)), [r[1] for r in found],
                [r[2] for r in found], [r[3] for r in found])


def layout(session: Session, dataset_id: uuid.UUID, *, spatial: bool, where: sql.Composable | None = None,
           params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every selected feature's id and vertex count (and, with ``spatial``, its box ``[minx, miny, maxx, maxy]``),
    in fid order: what a chunk plan is cut from."""
    box = ", ST_XMin(geometry), ST_YMin(geometry), ST_XMax(geometry), ST_YMax(geometry)" if spatial else ""
    query = sql.SQL("SELECT fid, ST_NPoints(geometry){} FROM spatial_data WHERE dataset_id = %(dataset_id)s{} "
                    "ORDER BY fid").format(sql.SQL(box), sql.SQL(" AND {}").format(where) if where else sql.SQL(""))
    with raw_connection(session).cursor(binary=True) as cur:
        cur.execute(query, {"dataset_id": dataset_id, **(params or {})})
        found = cur.fetchall()
    data = np.array(found, dtype=np.float64).reshape(len(found), 6 if spatial else 2)
    return data[:, 0].astype(np.int64), data[:, 1].astype(np.int64), data[:, 2:6] if spatial else None


def feature_ids(session: Session, dataset_id: uuid.UUID) -> np.ndarray:
    """Every feature id of a dataset, ascending (read from its (dataset_id, fid) index)."""
    with raw_connection(session).cursor(binary=True) as cur:
        cur.execute("SELECT fid FROM spatial_data WHERE dataset_id = %(d)s ORDER BY fid", {"d": dataset_id})
        return np.fromiter((r[0] for r in cur), np.int64)


def create_stage(session: Session, table: str, *, keyed: bool) -> None:
    """A table shaped like ``spatial_data`` (plus the pieces' source keys when ``keyed``), with no index yet."""
    extra = sql.SQL(", in_fid integer, ov_fid integer") if keyed else sql.SQL("")
    raw_connection(session).execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (LIKE spatial_data INCLUDING DEFAULTS INCLUDING GENERATED{})"
    ).format(sql.Identifier(table), extra))


def drop_stage(session: Session, table: str, *, lock_timeout_ms: int = 5000) -> None:
    conn = raw_connection(session)
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def copy_rows(session: Session, table: str, dataset_id: uuid.UUID, fids: Sequence[int], geoms: np.ndarray,
              attributes: Sequence[bytes], names: Sequence[str | None], *, srid: int, crs_label: str,
              keys: tuple[Sequence[int], Sequence[int]] | None = None) -> int:
    """Binary COPY of output rows (EWKB geometries; attributes as JSONB wire bytes) into a staging table."""
    geoms = shapely.set_srid(np.asarray(geoms, dtype=object), srid)
    wkb = shapely.to_wkb(geoms, include_srid=True)
    types = [GEOJSON_TYPES[t] for t in shapely.get_type_id(geoms)]
    columns = "dataset_id, fid, name, data_type, geometry, attributes, crs" + (", in_fid, ov_fid" if keys else "")
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), sql.SQL(columns))
    kinds = ["uuid", "int4", "text", "text", "bytea", "bytea", "text"] + (["int4", "int4"] if keys else [])
    with raw_connection(session).cursor().copy(statement) as copy:
        copy.set_types(kinds)
        for i in range(len(wkb)):
            row = (dataset_id, int(fids[i]), names[i], types[i], wkb[i], attributes[i], crs_label)
            if keys:
                a, b = int(keys[0][i]), int(keys[1][i])
                row = (*row, a if a >= 0 else None, b if b >= 0 else None)
            copy.write_row(row)
    return len(wkb)


def number_pieces(session: Session, stage: str, dataset_id: uuid.UUID) -> int:
    """Move staged overlay pieces into the result's partition table, numbered in the order a single run gives
    them (input feature, its pairs by overlay feature, its remainder; then the overlay's own parts)."""
    part = partition_name(dataset_id)
    conn = raw_connection(session)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE spatial_data INCLUDING DEFAULTS INCLUDING GENERATED)").format(
        sql.Identifier(part)))
    cur = conn.execute(sql.SQL(
        "INSERT INTO {} (dataset_id, fid, name, data_type, geometry, attributes, crs) "
        "SELECT dataset_id, row_number() OVER (ORDER BY in_fid IS NULL, in_fid, ov_fid IS NULL, ov_fid), name, "
        "data_type, geometry, attributes, crs FROM {}").format(sql.Identifier(part), sql.Identifier(stage)))
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(stage)))
    return int(cur.rowcount or 0)


def renumber(session: Session, dataset_id: uuid.UUID) -> None:
    """Number a partition's rows 1..n in fid order (after features were dropped from a 1:1 output)."""
    part = sql.Identifier(partition_name(dataset_id))
    raw_connection(session).execute(sql.SQL(
        "UPDATE {p} t SET fid = r.n FROM (SELECT id, row_number() OVER (ORDER BY fid) AS n FROM {p}) r "
        "WHERE t.id = r.id AND t.fid <> r.n").format(p=part))
