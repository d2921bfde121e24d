"""Feature queries: bbox, attribute filters and keyset cursors, always parameterised.

Filters look like ``pop_est>1000000``, ``continent=Africa`` or ``name~land`` (case-insensitive
substring). Field names must be fields of the dataset (which also makes them safe identifiers);
values are bound parameters compared as JSONB of the same JSON type, never spliced into SQL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import sql
from pyproj import CRS

from geoservice.analysis.crs import bounds_area_of_interest, same_crs, transform_bounds
from geoservice.db.models import Dataset
from geoservice.errors import InvalidInput
from geoservice.services.datasets import reprojection

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
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput("bbox: every coordinate must be a finite number (not NaN or Infinity)", field="bbox")
    return values


def bbox_to_native(bbox: list[float], bbox_crs: CRS, native: CRS, *, allow_ballpark: bool = False,
                   area_of_interest: tuple[float, float, float, float] | None = None) -> list[float]:
    """Transform a query bbox to the dataset's CRS with the pinned choice (densified edges).

    Args:
        bbox: ``[minx, miny, maxx, maxy]`` in ``bbox_crs`` (x/y order).
        bbox_crs: CRS of ``bbox``.
        native: the dataset's CRS.
        allow_ballpark: as for the read itself.
        area_of_interest: lon/lat degrees where the operation must be valid (the dataset's stored extent,
            so the bbox and the features answered use the same operation); default: the bbox itself.

    Returns:
        The bbox in ``native``; on lon/lat data, a box crossing the antimeridian becomes the full longitude
        range (a superset: ST_MakeEnvelope cannot express a crossing box).

    Raises:
        TransformationUnavailable: the best operation needs a missing grid and ``allow_ballpark`` is false.
        InvalidInput: the bbox cannot be transformed to the dataset's CRS.
    """
    if same_crs(bbox_crs, native):
        return bbox
    aoi = area_of_interest or bounds_area_of_interest(bbox, bbox_crs)
    plan = reprojection(bbox_crs, native, allow_ballpark=allow_ballpark, area_of_interest=aoi)
    box = transform_bounds(bbox, plan.transformer, native) if plan.transformer is not None else bbox
    if box is None:
        raise InvalidInput("bbox: cannot be transformed to the dataset's CRS (outside its area of use)",
                           field="bbox")
    if box[0] > box[2]:
        box[0], box[2] = -180.0, 180.0
    return box
