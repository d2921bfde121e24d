"""``prepare``: validate an analysis request with its operation's model and check access to its inputs, once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geopandas import GeoDataFrame
from pydantic import ValidationError
from sqlalchemy.orm import Session

from geoservice.analysis import Registry
from geoservice.analysis.registry import Operation
from geoservice.analysis.request import AnalysisRequest
from geoservice.db.models import Dataset
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.errors import Conflict, InvalidInput, NotFound
from geoservice.services import datasets as dataset_service
from geoservice.services import selection
from geoservice.services.access import Principal
from geoservice.services.analyses.inline_input import inline_layer
from geoservice.services.operations import operations


@dataclass(frozen=True)
class Prepared:
    """A checked request: valid parameters, the stored datasets it reads (the caller may read them), and its
    inline layers, parsed and validated (so a bad inline geometry is refused at submission)."""

    request: AnalysisRequest
    sources: Mapping[str, Dataset]
    inline: Mapping[str, GeoDataFrame] = field(default_factory=dict)

    @property
    def operation(self) -> Operation:
        return self.request.operation

    @property
    def analysis_type(self) -> str:
        return self.request.analysis_type

    def input_features(self) -> int:
        """Features the request reads: stored datasets' counts plus inline features (one for a bare geometry)."""
        total = 0
        for key, ref in self.request.inputs.items():
            if key in self.sources:
                total += self.sources[key].feature_count
            else:
                total += len((ref.geojson or {}).get("features") or [None])
        return total

    def base_name(self) -> str:
        """The name result datasets start with: the (first) input dataset's, else ``inline``."""
        return self.sources["input"].name if "input" in self.sources else "inline"


def registry(plugins: str) -> Registry:
    """The operations in force for ``plugins`` (``Settings.analysis_plugins``)."""
    return operations(plugins)


def prepare(session: Session, principal: Principal, analysis_type: str, parameters: Any, *, plugins: str,
            field_prefix: str = "parameters.", check_output_name: bool = True,
            layers: Mapping[str, GeoDataFrame] | None = None) -> Prepared:
    """Validate ``parameters`` (flat wire JSON, or an already parsed ``AnalysisRequest``) and check access.

    Args:
        analysis_type: the operation's name in the registry in force.
        parameters: the request as the task API receives it (or parsed already, e.g. by the agents' schemas).
        plugins: ``Settings.analysis_plugins``.
        field_prefix: put before field names in errors (``"parameters."`` for the task API, ``""`` for agents).
        check_output_name: refuse an ``output_name`` the principal already uses (409).
        layers: input layers the caller decoded itself (the SuperMap geometries); not parsed again.

    Raises:
        InvalidInput (422) naming the field: unknown operation, invalid parameters, an input dataset that
        does not exist or that the principal may not read. Conflict (409): the output name is taken.
    """
    ops = operations(plugins)
    if analysis_type not in ops:
        raise InvalidInput(f"analysis_type: unknown analysis {analysis_type!r}; use one of {sorted(ops)}",
                           field="analysis_type")
    op = ops[analysis_type]
    request = parameters if isinstance(parameters, AnalysisRequest) else _parse(op, parameters, field_prefix)
    sources = {key: input_dataset(session, principal, ref.dataset_id, f"{field_prefix}{key}")
               for key, ref in request.inputs.items() if ref.dataset_id is not None}
    inline = {key: inline_layer(ref, f"{field_prefix}{key}")
              for key, ref in request.inputs.items() if ref.geojson is not None and key not in (layers or {})}
    _check_field_refs(request, sources, {**inline, **(layers or {})}, field_prefix)
    if check_output_name and request.output_name and \
            dataset_repo.get_by_name(session, principal.user_id, request.output_name) is not None:
        raise Conflict(f"{field_prefix}output_name: a dataset named {request.output_name!r} already exists",
                       field=f"{field_prefix}output_name")
    return Prepared(request, sources, inline)


def _check_field_refs(request: AnalysisRequest, sources: Mapping[str, Dataset],
                      layers: Mapping[str, GeoDataFrame], prefix: str) -> None:
    """Settings that name attributes (``dissolve_by``, ``input_fields``...) must name attributes the input has."""
    for setting, key in request.operation.field_refs:
        value = getattr(request.settings, setting, None)
        if value is None:
            continue
        if key in sources:
            names = [f["name"] for f in selection.select_fields(sources[key], request.inputs[key].fields)]
        elif key in layers:
            names = [str(c) for c in layers[key].columns if c != layers[key].geometry.name]
        else:
            continue
        missing = [v for v in ([value] if isinstance(value, str) else value) if v not in names]
        if missing:
            raise InvalidInput(f"{prefix}{setting}: no attribute {', '.join(map(repr, missing))} in the {key} layer; "
                               f"its attributes are {names}", field=f"{prefix}{setting}")


def input_dataset(session: Session, principal: Principal, dataset_id: Any, field: str) -> Dataset:
    """The stored dataset an input names, if the principal may read it (else a 422 naming the field)."""
    try:
        return dataset_service.get_dataset(session, dataset_id, principal)
    except NotFound as exc:
        where = f"{field}.dataset_id"
        raise InvalidInput(f"{where}: unknown dataset {dataset_id}", field=where) from exc


_NAMED = re.compile(r"(?:Value error, )?([a-z_]+(?:\.[a-z_]+)*): ")


def _parse(op: Operation, parameters: Any, prefix: str) -> AnalysisRequest:
    try:
        return AnalysisRequest.parse(op, parameters)
    except ValidationError as exc:
        errors = exc.errors()

        def where(e: Any) -> str:
            if e["loc"]:
                return prefix + ".".join(str(p) for p in e["loc"])
            # a model-level check names its field first ("distance: a bare number has no unit")
            named = _NAMED.match(e["msg"])
            return prefix + named.group(1) if named else (prefix.rstrip(".") or "arguments")

        problems = "; ".join(f"{where(e)}: {e['msg']}" for e in errors[:5])
        raise InvalidInput(problems, field=where(errors[0])) from exc
