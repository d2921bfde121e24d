"""Loading an analysis's input layers: stored datasets (with their feature selection) or inline GeoJSON.

The one loader, for the Celery runner and for in-process runs alike; access was checked by ``prepare``.
"""

from __future__ import annotations

from geopandas import GeoDataFrame
from sqlalchemy.orm import Session

from geoservice.services import selection
from geoservice.services.analyses.inline_input import inline_layer
from geoservice.services.analyses.prepare import Prepared


def load_layers(session: Session, prepared: Prepared, *, field_prefix: str = "") -> dict[str, GeoDataFrame]:
    """Return the request's input layers by input name.

    ``field_prefix`` is put before field names in errors (``"parameters."`` for the task API).
    """
    layers: dict[str, GeoDataFrame] = {}
    for key, ref in prepared.request.inputs.items():
        if key in prepared.sources:
            # Only the selected features and attributes (issue #5: filters of the SuperMap surface).
            layers[key] = selection.read_input(session, prepared.sources[key], ref.where, ref.fields
                                               ).reset_index(drop=True)
        elif key in prepared.inline:  # parsed and validated by prepare
            layers[key] = prepared.inline[key]
        else:
            layers[key] = inline_layer(ref, f"{field_prefix}{key}")
    return layers
