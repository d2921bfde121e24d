"""The frozen registry of analysis operations: dispatch is a lookup, never an if/elif chain."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from geopandas import GeoDataFrame
from pydantic import BaseModel

from geoservice.analysis.base import AnalysisOutput, ProgressFn

Runner = Callable[[Mapping[str, GeoDataFrame], Any, ProgressFn], AnalysisOutput]


@dataclass(frozen=True)
class Operation:
    """One analysis: its params model, which params fields are input layers, and the pure function.

    ``chunking="map"`` says the operation maps each input feature to at most one output feature on its own
    (no feature depends on another), so a large input may run as chunks over many workers (issue #11).
    ``field_refs`` names the settings that name attributes of an input (``("dissolve_by", "input")``), so a
    request naming an attribute the input lacks is refused when it is submitted, not when it runs.
    """

    name: str
    title: str
    params_model: type[BaseModel]
    inputs: tuple[str, ...]
    run: Runner
    chunking: str | None = None
    field_refs: tuple[tuple[str, str], ...] = ()


class Registry(Mapping[str, Operation]):
    """An immutable name -> Operation mapping; ``with_operation`` returns a new registry."""

    def __init__(self, operations: Mapping[str, Operation] | None = None) -> None:
        self._ops = MappingProxyType(dict(operations or {}))

    def __getitem__(self, name: str) -> Operation:
        return self._ops[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def with_operation(self, op: Operation) -> Registry:
        return Registry({**self._ops, op.name: op})
