"""Feature selections of dataset inputs: a filter tree compiled to a parameterised WHERE clause.

The tree (``geoservice.supermap.filters``) arrives in ``InputRef.where``; ``InputRef.fields`` limits the
attributes loaded. Field names are resolved against the dataset's own fields (exact name first, then a
unique case-insensitive match, as iServer's field names are case-insensitive) and are passed as bound
parameters too; every value is a bound parameter. ``SmID`` is the feature id (``spatial_data.fid``).
Comparisons use the field's recorded type: numbers as ``numeric``, text/date fields as text, booleans
as JSON booleans, so ``'10'`` never compares with ``9`` by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geopandas import GeoDataFrame
from psycopg import sql
from sqlalchemy.orm import Session

from geoservice.db import gis_io
from geoservice.db.models import Dataset
from geoservice.errors import BadRequest
from geoservice.services.datasets import dataset_crs

FID = "SmID"
_OPS = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_NUMERIC = {"int", "float"}
_TEXT = {"str", "date", "datetime"}


@dataclass
class Compiled:
    """A WHERE fragment and its parameters (names ``w0``, ``w1``, ...)."""

    where: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)


def resolve_field(dataset: Dataset, name: str, where: str = "attributeFilter") -> dict[str, Any]:
    """Return the dataset field called ``name`` (``{"name": ..., "type": ...}``); ``SmID`` is the id."""
    if name.lower() == FID.lower():
        return {"name": FID, "type": "fid"}
    fields = dataset.fields or []
    for f in fields:
        if f["name"] == name:
            return f
    matches = [f for f in fields if f["name"].lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(f["name"] for f in fields)) or "(none)"
    raise BadRequest(f"{where}: dataset {dataset.name} has no field {name!r}; its fields are SmID, {known}")


def compile_where(tree: dict[str, Any], dataset: Dataset) -> Compiled:
    """Compile a filter tree for ``dataset``.

    Raises:
        BadRequest: an unknown field, a value of the wrong type for its field, a malformed tree.
    """
    out = Compiled(sql.SQL("TRUE"))
    out.where = _node(tree, dataset, out.params, 0)
    return out


def _param(params: dict[str, Any], value: Any) -> sql.Composable:
    key = f"w{len(params)}"
    params[key] = value
    return sql.SQL("%({})s").format(sql.SQL(key))


def _node(node: Any, dataset: Dataset, params: dict[str, Any], depth: int) -> sql.Composable:
    if not isinstance(node, dict) or depth > 100:
        raise BadRequest("attributeFilter: malformed filter")
    op = node.get("op")
    if op in ("and", "or"):
        parts = [_node(a, dataset, params, depth + 1) for a in node.get("args") or []]
        if not parts:
            raise BadRequest("attributeFilter: malformed filter")
        joined = sql.SQL(" AND " if op == "and" else " OR ").join(parts)
        return sql.SQL("({})").format(joined)
    if op == "not":
        return sql.SQL("(NOT {})").format(_node(node.get("arg"), dataset, params, depth + 1))
    f = resolve_field(dataset, str(node.get("field")))
    if op == "cmp":
        if node.get("cmp") not in _OPS:
            raise BadRequest("attributeFilter: malformed filter")
        return _compare(f, sql.SQL(_OPS[node["cmp"]]), node.get("value"), params)
    if op == "in":
        values = node.get("values")
        if not isinstance(values, list) or not values:
            raise BadRequest("attributeFilter: malformed filter")
        if f["type"] == "fid" and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return sql.SQL("(fid = ANY({}::bigint[]))").format(_param(params, values))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(
            _compare(f, sql.SQL("="), v, params) for v in values))
    if op == "like":
        if f["type"] == "json":
            raise BadRequest(f"attributeFilter: field {f['name']} holds JSON values and cannot be matched with LIKE")
        return sql.SQL("({} LIKE {})").format(_as_text(f, params), _param(params, str(node.get("pattern"))))
    if op == "null":
        if f["type"] == "fid":
            return sql.SQL("FALSE")
        return sql.SQL("(coalesce(jsonb_typeof(attributes -> {}), 'null') = 'null')").format(
            _param(params, f["name"]))
    raise BadRequest("attributeFilter: malformed filter")


def _as_text(f: dict[str, Any], params: dict[str, Any]) -> sql.Composable:
    if f["type"] == "fid":
        return sql.SQL("fid::text")
    return sql.SQL("(attributes ->> {})").format(_param(params, f["name"]))


def _compare(f: dict[str, Any], op: sql.Composable, value: Any, params: dict[str, Any]) -> sql.Composable:
    kind = f["type"]
    name = f["name"]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "fid":
        if not is_number:
            raise BadRequest(f"attributeFilter: SmID is a number; compare it with a number, not {value!r}")
        return sql.SQL("(fid {} {})").format(op, _param(params, value))
    if kind in _NUMERIC:
        if not is_number:
            raise BadRequest(f"attributeFilter: field {name} is numeric; compare it with a number, not {value!r}")
        key = _param(params, name)
        return sql.SQL("(CASE WHEN jsonb_typeof(attributes -> {k}) = 'number' THEN (attributes ->> {k})::numeric "
                       "END {op} {v}::numeric)").format(k=key, op=op, v=_param(params, value))
    if kind == "bool":
        if not isinstance(value, bool) and value not in (0, 1):
            raise BadRequest(f"attributeFilter: field {name} is boolean; compare it with TRUE or FALSE")
        return sql.SQL("((attributes -> {}) {} {}::jsonb)").format(
            _param(params, name), op, _param(params, "true" if value else "false"))
    if kind == "json":
        raise BadRequest(f"attributeFilter: field {name} holds JSON values and cannot be compared")
    if not isinstance(value, str):
        raise BadRequest(f"attributeFilter: field {name} is text; compare it with a quoted string such as "
                         f"'{value}', not {value!r}")
    return sql.SQL("((attributes ->> {}) {} {})").format(_param(params, name), op, _param(params, value))


def select_fields(dataset: Dataset, names: list[str] | None, where: str = "fields") -> list[dict[str, Any]]:
    """Return the dataset's fields limited to ``names`` (None: all), in dataset order."""
    if names is None:
        return list(dataset.fields or [])
    wanted = {resolve_field(dataset, n, where)["name"] for n in names}
    return [f for f in dataset.fields or [] if f["name"] in wanted]


def count_selected(session: Session, dataset: Dataset, tree: dict[str, Any] | None) -> int:
    """Count the dataset's features a filter selects (run at submit time: checks the filter on real data)."""
    compiled = compile_where(tree, dataset) if tree is not None else Compiled(sql.SQL("TRUE"))
    query = sql.SQL("SELECT count(*) FROM spatial_data WHERE dataset_id = %(dataset_id)s AND {}").format(
        compiled.where)
    with gis_io.raw_connection(session).cursor() as cur:
        cur.execute(query, {"dataset_id": dataset.id, **compiled.params})
        row = cur.fetchone()
    return int(row[0]) if row else 0


def read_input(session: Session, dataset: Dataset, where: dict[str, Any] | None,
               fields: list[str] | None) -> GeoDataFrame:
    """Read a dataset input: the selected features with the selected attributes, in fid order."""
    columns = select_fields(dataset, fields)
    compiled = compile_where(where, dataset) if where is not None else None
    gdf, _ = gis_io.read_features(session, dataset.id, dataset_crs(dataset), columns,
                                  where=compiled.where if compiled else None,
                                  params=compiled.params if compiled else None)
    return gdf
