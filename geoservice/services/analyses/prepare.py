"""``prepare``: validate an analysis request with its operation's model and check access to its inputs, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from geoservice.analysis import Registry
from geoservice.analysis.registry import Operation
from geoservice.analysis.request import AnalysisRequest
from geoservice.db.models import Dataset
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.errors import Conflict, InvalidInput, NotFound
from geoservice.services import datasets as dataset_service
from geoservice.services.access import Principal
from geoservice.services.operations import operations


@dataclass(frozen=True)
class Prepared:
    """A checked request: valid parameters, and the stored datasets it reads (the caller may read them)."""

    request: AnalysisRequest
    sources: Mapping[str, Dataset]

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
            field_prefix: str = "parameters.", check_output_name: bool = True) -> Prepared:
    """Validate ``parameters`` (flat wire JSON, or an already parsed ``AnalysisRequest``) and check access.

    Args:
        analysis_type: the operation's name in the registry in force.
        parameters: the request as the task API receives it (or parsed already, e.g. by the agents' schemas).
        plugins: ``Settings.analysis_plugins``.
        field_prefix: put before field names in errors (``"parameters."`` for the task API, ``""`` for agents).
        check_output_name: refuse an ``output_name`` the principal already uses (409).

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
    if check_output_name and request.output_name and \
            dataset_repo.get_by_name(session, principal.user_id, request.output_name) is not None:
        raise Conflict(f"{field_prefix}output_name: a dataset named {request.output_name!r} already exists",
                       field=f"{field_prefix}output_name")
    return Prepared(request, sources)


def input_dataset(session: Session, principal: Principal, dataset_id: Any, field: str) -> Dataset:
    """The stored dataset an input names, if the principal may read it (else a 422 naming the field)."""
    try:
        return dataset_service.get_dataset(session, dataset_id, principal)
    except NotFound as exc:
        where = f"{field}.dataset_id"
        raise InvalidInput(f"{where}: unknown dataset {dataset_id}", field=where) from exc


def _parse(op: Operation, parameters: Any, prefix: str) -> AnalysisRequest:
    try:
        return AnalysisRequest.parse(op, parameters)
    except ValidationError as exc:
        errors = exc.errors()

        def where(e: Any) -> str:
            return prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else (prefix.rstrip(".") or "arguments")

        problems = "; ".join(f"{where(e)}: {e['msg']}" for e in errors[:5])
        raise InvalidInput(problems, field=where(errors[0])) from exc
