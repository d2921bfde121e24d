"""Feature queries: bbox, attribute filters and keyset cursors, always parameterised.

Filters look like ``pop_est>1000000``, ``continent=Africa`` or ``name~land`` (case-insensitive
substring). Field names must be fields of the dataset (which also makes them safe identifiers);
values are bound parameters compared as JSONB of the same JSON type, never spliced into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import sql
from pyproj import CRS

from geoservice.db.models import Dataset
from geoservice.errors import InvalidInput
from geoservice.services.datasets import same_crs, transformer_for

_FILTER = re.compile(r"^\s*([^=!<>~]+?)\s*(=|!=|<=|>=|<|>|~)\s*(.*?)\s*$", re.S)
_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class FeatureQuery:
    where: list[sql.Composable] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def clause(self) -> sql.Composable | None:
        return sql.SQL(" AND ").join(self.where) if self.where else None


def _value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # a bare word is a string


def add_filters(query: FeatureQuery, dataset: Dataset, filters: list[str]) -> None:
    """Add ``field op value`` attribute filters (AND-ed)."""
    known = {f["name"] for f in dataset.fields}
    for i, expr in enumerate(filters):
        match = _FILTER.match(expr)
        if match is None:
            raise InvalidInput(f"filter: cannot parse {expr!r}; use field=value, field>value, field~text ...",
                               field="filter")
        name, op, raw = match.groups()
        if name not in known:
            raise InvalidInput(f"filter: unknown field {name!r}; fields are {sorted(known)}", field="filter")
        key, value = f"f{i}", f"v{i}"
        query.params[key] = name
        if op == "~":
            query.where.append(sql.SQL("(attributes ->> %({})s) ILIKE %({})s").format(
                sql.SQL(key), sql.SQL(value)))
            query.params[value] = "%" + raw.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
            continue
        parsed = _value(raw)
        query.params[value] = orjson.dumps(parsed).decode()
        # Same JSON type on both sides, so '10' never compares with 9 by type order.
        query.where.append(sql.SQL(
            "(attributes -> %({k})s) {op} %({v})s::jsonb AND jsonb_typeof(attributes -> %({k})s) = "
            "jsonb_typeof(%({v})s::jsonb)"
        ).format(k=sql.SQL(key), v=sql.SQL(value), op=sql.SQL(_SQL_OPS[op])))


def add_bbox(query: FeatureQuery, dataset: Dataset, native_bbox: list[float]) -> None:
    """Keep features intersecting ``native_bbox`` (a bbox already in the dataset's CRS)."""
    query.params.update(dict(zip(("bx0", "by0", "bx1", "by1"), native_bbox, strict=True)))
    query.params["bsrid"] = dataset.srid
    query.where.append(sql.SQL(
        "ST_Intersects(geometry, ST_MakeEnvelope(%(bx0)s, %(by0)s, %(bx1)s, %(by1)s, %(bsrid)s))"
    ))


def parse_bbox(raw: str) -> list[float]:
    """Parse ``minx,miny,maxx,maxy``."""
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[0] > values[2] or values[1] > values[3]:
        raise InvalidInput("bbox: expected minx,miny,maxx,maxy with min <= max", field="bbox")
    return values


def bbox_to_native(bbox: list[float], bbox_crs: CRS, native: CRS) -> list[float]:
    """Transform a bbox to the dataset's CRS (densified edges, so curved edges are covered)."""
    if same_crs(bbox_crs, native):
        return bbox
    transformer = transformer_for(bbox_crs.to_wkt(), native.to_wkt())
    return [float(v) for v in transformer.transform_bounds(*bbox, densify_pts=21)]
