"""The operation registry in force: the built-in ``OPERATIONS`` plus configured plugins."""

from __future__ import annotations

import importlib
from functools import lru_cache

from geoservice.analysis import OPERATIONS, Operation, Registry
from geoservice.config import get_settings


@lru_cache(maxsize=8)
def load_registry(plugins: str) -> Registry:
    """Return ``OPERATIONS`` extended with the ``module:attribute`` operations listed in ``plugins``."""
    registry = OPERATIONS
    for spec in filter(None, (p.strip() for p in plugins.split(","))):
        module, _, attr = spec.partition(":")
        op = getattr(importlib.import_module(module), attr)
        if not isinstance(op, Operation):
            raise TypeError(f"analysis plugin {spec} is not an Operation")
        registry = registry.with_operation(op)
    return registry


def operations(plugins: str | None = None) -> Registry:
    """Return the registry for ``plugins`` (default: the configured ones)."""
    return load_registry(get_settings().analysis_plugins if plugins is None else plugins)
