"""What a caller asks of an operation: input layers by reference, the algorithm's settings, the output name.

An operation's params model (``Operation.params_model``) holds only the algorithm's own settings. Which
layers go in (``InputRef``: a stored dataset or inline GeoJSON) and what the output is called belong to
the request, and ``AnalysisRequest`` keeps them apart inside the code. On the wire (``POST
/api/v1/tasks``, agents' tool arguments, ``analysis_tasks.parameters``) a request is one flat object:
the settings' fields, one ``InputRef`` per input layer (``input``, ``overlay``) and ``output_name``;
``parameters_model(op)`` is that wire model, so one schema validates it everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Self
from uuid import UUID

from pydantic import BaseModel, Field, create_model, model_validator

from geoservice.analysis.params import StrictModel
from geoservice.analysis.registry import Operation

OUTPUT_NAME = "output_name"


class InputRef(StrictModel):
    """An analysis input: a stored dataset, or inline GeoJSON (a FeatureCollection, Feature or geometry).

    Inline GeoJSON is CRS84 (RFC 7946) unless ``crs`` says otherwise.
    """

    dataset_id: UUID | None = Field(default=None, description="a stored dataset you can read")
    geojson: dict[str, Any] | None = Field(
        default=None, description="inline GeoJSON: a FeatureCollection, a Feature or a bare geometry"
    )
    crs: str | None = Field(default=None, description="CRS of inline GeoJSON; default OGC:CRS84")
    # Feature selection of a dataset input (issue #5): a filter tree (see geoservice.services.selection),
    # compiled to a parameterised query when the input is loaded; and the attributes to load.
    where: dict[str, Any] | None = Field(default=None, description="dataset inputs only: features to use")
    fields: list[str] | None = Field(default=None, description="dataset inputs only: attributes to load")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.dataset_id is None) == (self.geojson is None):
            raise ValueError("give exactly one of 'dataset_id' or 'geojson'")
        if self.crs is not None and self.dataset_id is not None:
            raise ValueError("'crs' applies to inline 'geojson' only; a dataset has its own CRS")
        if (self.where is not None or self.fields is not None) and self.dataset_id is None:
            raise ValueError("'where' and 'fields' apply to dataset inputs only")
        return self


@lru_cache(maxsize=64)
def parameters_model(op: Operation) -> type[BaseModel]:
    """The flat wire model of ``op``'s requests: its settings, its input layers and ``output_name``."""
    layers: dict[str, Any] = {
        key: (InputRef, Field(description=f"the {key} layer: a stored dataset ({{\"dataset_id\": ...}}) or inline "
                                          "GeoJSON ({\"geojson\": ...}, lon/lat unless 'crs' is given)"))
        for key in op.inputs
    }
    output = (str | None, Field(default=None, max_length=200, description="name of the result dataset "
                                "(default: generated from the input's name, the operation and the task id)"))
    name = "".join(part.capitalize() for part in op.name.split("_")) + "Parameters"
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        name, __base__=op.params_model, __doc__=f"Parameters of a {op.name} analysis: {op.title}.",
        **layers, **{OUTPUT_NAME: output},
    )
    return model


@dataclass(frozen=True)
class AnalysisRequest:
    """One request of an operation: its input layers, its settings (the params model) and the output name."""

    operation: Operation
    inputs: Mapping[str, InputRef]
    settings: BaseModel
    output_name: str | None = None

    @classmethod
    def parse(cls, op: Operation, parameters: Any) -> AnalysisRequest:
        """Validate flat wire ``parameters`` (raises pydantic's ``ValidationError``)."""
        return cls.from_wire(op, parameters_model(op).model_validate(parameters))

    @classmethod
    def from_wire(cls, op: Operation, wire: BaseModel) -> AnalysisRequest:
        """Split a validated wire model into inputs, settings and output name (no second validation)."""
        values = {name: getattr(wire, name) for name in op.params_model.model_fields}
        settings = op.params_model.model_construct(_fields_set=wire.model_fields_set & set(values), **values)
        return cls(op, {key: getattr(wire, key) for key in op.inputs}, settings, getattr(wire, OUTPUT_NAME))

    @property
    def analysis_type(self) -> str:
        return self.operation.name

    def parameters(self) -> dict[str, Any]:
        """The request as flat wire JSON (what ``analysis_tasks.parameters`` stores)."""
        out: dict[str, Any] = {key: ref.model_dump(mode="json", exclude_none=True) for key, ref in self.inputs.items()}
        out.update(self.settings.model_dump(mode="json", exclude_none=True))
        if self.output_name is not None:
            out[OUTPUT_NAME] = self.output_name
        return out

    def with_inputs(self, **inputs: InputRef) -> AnalysisRequest:
        """The same request with some input layers replaced."""
        return AnalysisRequest(self.operation, {**self.inputs, **inputs}, self.settings, self.output_name)


def request_of(op: Operation, settings: BaseModel | Mapping[str, Any], inputs: Mapping[str, InputRef],
               output_name: str | None = None) -> AnalysisRequest:
    """Build a request from its parts (settings as a model or a mapping validated by the params model)."""
    model = settings if isinstance(settings, BaseModel) else op.params_model.model_validate(dict(settings))
    return AnalysisRequest(op, dict(inputs), model, output_name)
