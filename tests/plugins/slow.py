"""``slow_reproject``: the real reprojection, preceded by a paced computing phase.

The kill, cancel, duplicate-delivery and time-limit tests need a task that is reliably still
running when they act; this plugin gives them one without touching production operations.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from geopandas import GeoDataFrame
from pydantic import Field

from geoservice.analysis import AnalysisOutput, Operation, ProgressFn
from geoservice.analysis.reproject import ReprojectParams, reproject


class SlowReprojectParams(ReprojectParams):
    seconds: float = Field(default=4.0, ge=0, le=600)


def _run(layers: Mapping[str, GeoDataFrame], params: Any, progress: ProgressFn) -> AnalysisOutput:
    steps = max(int(params.seconds / 0.1), 1)
    for i in range(steps):
        time.sleep(params.seconds / steps)
        progress(i / steps * 0.9, "computing")
    return reproject(layers["input"], params, progress)


OPERATION = Operation("slow_reproject", "Reprojection with a paced computing phase (tests)", SlowReprojectParams,
                      ("input",), _run, chunking="map")  # on a large dataset: every chunk takes ``seconds``
