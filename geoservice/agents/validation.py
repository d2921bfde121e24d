"""Check tool arguments: first against the agent-facing JSON schema, then with the params model.

The schema step is what refuses a bare number as a distance (the params model alone would accept the flat
``"distance": 500, "unit": "m"`` form the REST API tolerates); the model step adds the rules a schema cannot
say (exactly one of ``dataset_id``/``geojson``, finite numbers, ...). Either way the error is a 422 that names
the argument in ``field``, with every problem found in ``errors``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import BaseModel, ValidationError

from geoservice.agents.tools import ToolSpec
from geoservice.errors import InvalidInput
from geoservice.text import find_bad_text

UNITS = "m, km, mi, ft, nmi, degrees"
DISTANCE_HINT = 'give a distance with its unit, e.g. {"value": 500, "unit": "m"} (units: ' + UNITS + ")"


@lru_cache(maxsize=64)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def validate_args(spec: ToolSpec, args: Any) -> BaseModel:
    """Return ``args`` parsed with the tool's params model, or raise a 422 naming the argument."""
    if not isinstance(args, dict):
        raise InvalidInput(f"arguments: {spec.name} takes a JSON object of named arguments", field="arguments")
    bad = find_bad_text(args)
    if bad:
        raise InvalidInput(f"{spec.name}: {bad[0]}: {bad[1]}", field=bad[0])
    validator = _validator(orjson.dumps(spec.input_schema, option=orjson.OPT_SORT_KEYS))
    problems = [_describe(e) for e in validator.iter_errors(args)]
    if problems:
        _raise(spec.name, sorted(problems, key=lambda p: (not p["distance"], p["field"])))
    try:
        return spec.params_model.model_validate(args)
    except ValidationError as exc:
        _raise(spec.name, [_from_pydantic(e) for e in exc.errors()])
    raise AssertionError("unreachable")  # pragma: no cover


def _raise(tool: str, problems: list[dict[str, Any]]) -> None:
    problems = list({p["field"]: p for p in reversed(problems)}.values())[::-1]  # one problem per argument
    detail = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    errors = [{"field": p["field"], "problem": p["problem"]} for p in problems]
    raise InvalidInput(f"{tool}: {detail}", field=problems[0]["field"], extra={"errors": errors})


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_distance(schema: Any) -> bool:
    return isinstance(schema, dict) and {"value", "unit"} <= set(schema.get("properties") or {})


def _describe(error: SchemaError) -> dict[str, Any]:
    """One schema error as ``{"field", "problem", "distance"}`` (distance problems are reported first)."""
    where = _path(error.absolute_path)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in (error.instance or {})]
        field = _path([*error.absolute_path, missing[0]]) if missing else where
        hint = f"; {DISTANCE_HINT}" if field.endswith(("distance", "unit")) else ""
        return {"field": field, "problem": "required argument is missing" + hint, "distance": bool(hint)}
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set((error.schema or {}).get("properties") or {}))
        if "unit" in extra and "distance" in ((error.schema or {}).get("properties") or {}):
            return {"field": _path([*error.absolute_path, "distance"]),
                    "problem": f"the unit goes inside distance: {DISTANCE_HINT}", "distance": True}
        known = ", ".join(sorted((error.schema or {}).get("properties") or {}))
        return {"field": _path([*error.absolute_path, extra[0]]) if extra else where,
                "problem": f"unknown argument(s) {extra}; arguments are: {known}", "distance": False}
    if _is_distance(error.schema) and error.validator == "type":
        what = "a bare number has no unit" if isinstance(error.instance, int | float) else "not an object"
        return {"field": where or "distance", "problem": f"{what}; {DISTANCE_HINT}", "distance": True}
    return {"field": where or "arguments", "problem": error.message, "distance": False}


def _from_pydantic(error: Any) -> dict[str, Any]:
    loc = [part for part in error.get("loc", ()) if not isinstance(part, str) or not part.startswith("function-")]
    return {"field": _path(loc) or "arguments", "problem": error.get("msg", "invalid"), "distance": False}
