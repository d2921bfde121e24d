"""Cutting a layer into chunks in spatial order (pure): a Hilbert curve over feature box centres.

Features close on the ground land in the same chunk, so a chunk's extent stays small: an overlay chunk then
reads only the other layer's features near it. Chunks are cut by feature count and by vertex count (the
work and the memory of a chunk grow with its vertices), never splitting a feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

HILBERT_ORDER = 16  # a 65,536 x 65,536 grid over the layer's extent


@dataclass(frozen=True)
class Cut:
    """One chunk: positions into the arrays given to ``cut_chunks`` (in curve order), and its totals."""

    positions: NDArray[np.intp]
    features: int
    vertices: int


def hilbert_keys(x: NDArray[np.float64], y: NDArray[np.float64], order: int = HILBERT_ORDER) -> NDArray[np.int64]:
    """Hilbert curve distance of each point (x, y) on a ``2**order`` grid spanning the points' extent."""
    n = 1 << order
    span_x = float(np.nanmax(x) - np.nanmin(x)) if len(x) else 0.0
    span_y = float(np.nanmax(y) - np.nanmin(y)) if len(y) else 0.0
    gx = np.zeros(len(x), np.int64) if span_x == 0 else ((x - np.nanmin(x)) / span_x * (n - 1)).astype(np.int64)
    gy = np.zeros(len(y), np.int64) if span_y == 0 else ((y - np.nanmin(y)) / span_y * (n - 1)).astype(np.int64)
    gx, gy = np.clip(gx, 0, n - 1), np.clip(gy, 0, n - 1)
    d = np.zeros(len(x), np.int64)
    s = n >> 1
    while s > 0:  # the classic xy2d, vectorised over all points
        rx = (gx & s) > 0
        ry = (gy & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = ~ry
        swap_x = np.where(flip & rx, s - 1 - gx, gx)
        swap_y = np.where(flip & rx, s - 1 - gy, gy)
        gx, gy = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s >>= 1
    return d


def cut_chunks(vertices: NDArray[np.int64], *, max_features: int, max_vertices: int,
               order: NDArray[np.intp] | None = None) -> list[Cut]:
    """Cut features (in ``order``, default as given) into consecutive chunks of at most ``max_features``
    features and ``max_vertices`` vertices (a feature with more vertices than that is a chunk of its own).

    The bounds are divided evenly first (100 features at most 30 per chunk give 4 chunks of 25), so chunks
    are about equal in size and no chunk is left with a small remainder.
    """
    order = np.arange(len(vertices)) if order is None else np.asarray(order)
    n = len(order)
    if n == 0:
        return []
    weights = np.asarray(vertices, np.int64)[order]
    total = int(weights.sum())
    count = max(-(-n // max(max_features, 1)), -(-total // max(max_vertices, 1)), 1)
    per_features = -(-n // count)
    per_vertices = min(max(max_vertices, 1), max(-(-total // count), 1))
    ends = np.cumsum(weights)
    cuts, start = [], 0
    while start < n:
        before = int(ends[start - 1]) if start else 0
        by_vertices = int(np.searchsorted(ends, before + per_vertices, side="right"))
        stop = max(start + 1, min(start + per_features, by_vertices, n))
        part = order[start:stop]
        cuts.append(Cut(part, stop - start, int(ends[stop - 1]) - before))
        start = stop
    return cuts
