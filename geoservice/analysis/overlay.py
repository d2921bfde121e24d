"""Overlay of an input layer with an overlay layer: one output piece per feature (pair), never dissolved.

| operation | pieces | attributes |
| intersect | a ∩ b for each intersecting pair | both sides |
| clip      | a ∩ union(B)                      | input |
| erase     | a − union(B)                      | input |
| identity  | a ∩ b per pair, plus a − union(B) | both inside the overlay, input only outside |
| union     | a ∩ b per pair, a − union(B), b − union(A) | both, nulls where a side is absent |
| update    | a − union(B), plus every b        | each piece its own side's |
| xor       | a − union(B), b − union(A)        | each piece its own side's |

``union(B)`` is, for each input feature, the union of the overlay features an STRtree pairs with it (and
the other way round for ``b − union(A)``). Identity pieces add up exactly to the input where the overlay
polygons do not overlap each other; where they do, there is one piece per overlay feature (as ArcGIS and
QGIS do). Inputs of any type are allowed for intersect/clip/erase/identity; the overlay layer must be
polygons, except for intersect (lines crossing lines give points, with ``keep_geom_type`` off), and both
layers must be polygons for union/update/xor.

Attributes: with both sides on one piece (intersect, identity, union), a name present on both sides
becomes ``input_<name>`` and ``overlay_<name>``. With one side per piece (update, xor), same-named
columns are shared and each piece fills them from its own side. With ``keep_geom_type`` (default) each
piece keeps only the dimension of its source feature (no stray lines or points from polygon overlays);
pieces left empty are dropped. Features with null or empty geometry produce no pieces. Invalid polygons
are repaired with ``make_valid(method="structure")`` first and counted in the metadata.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame, GeoSeries
from pydantic import Field, model_validator
from pyproj import CRS

from geoservice.analysis.base import AnalysisOutput, ProgressFn, no_progress
from geoservice.analysis.errors import EmptyInput, InvalidGeometry, MissingCRS, UnsupportedGeometryType
from geoservice.analysis.params import StrictModel
from geoservice.analysis.reproject import reproject_layer
from geoservice.errors import InvalidInput

CHUNK_SIZE = 2_000
OperationName = Literal["intersect", "clip", "erase", "identity", "union", "update", "xor"]
POLYGONS_ONLY = frozenset({"union", "update", "xor"})
PLANAR_OPS = {
    "intersection": shapely.intersection,
    "union": shapely.union,
    "difference": shapely.difference,
    "symdifference": shapely.symmetric_difference,
}
#: Which piece kinds each operation emits: pairs (a ∩ b), a_rest (a − ∪B), b_rest (b − ∪A), b_all, a_clip.
PIECES: dict[str, tuple[str, ...]] = {
    "intersect": ("pairs",),
    "clip": ("a_clip",),
    "erase": ("a_rest",),
    "identity": ("pairs", "a_rest"),
    "union": ("pairs", "a_rest", "b_rest"),
    "update": ("a_rest", "b_all"),
    "xor": ("a_rest", "b_rest"),
}


class OverlayParams(StrictModel):
    """Settings of ``overlay`` (a task adds its ``input`` and ``overlay`` layers and ``output_name``)."""

    operation: OperationName
    input_fields: list[str] | None = Field(default=None, description="input attributes to keep (default all)")
    overlay_fields: list[str] | None = Field(default=None, description="overlay attributes to keep")
    grid_size: float | None = Field(default=None, gt=0, description="snap-rounding grid, in CRS units")
    keep_geom_type: bool = Field(default=True, description="drop parts of another dimension than the input")
    pairwise: bool = Field(
        default=False,
        description="pair input feature i with overlay feature i only (or every input feature with the one "
        "overlay feature), instead of every intersecting pair; each piece then records its 'pair' (the input "
        "feature's 0-based position) and b - a pieces are computed per pair (SuperMap's batch overlay)",
    )

    @model_validator(mode="after")
    def _pairwise_fields(self) -> OverlayParams:
        if self.pairwise and "pair" in (self.input_fields or []) + (self.overlay_fields or []):
            raise ValueError("with pairwise, the output has its own 'pair' attribute; do not select one")
        return self


def overlay_planar(a: np.ndarray, b: np.ndarray | None, op: str, grid_size: float | None = None) -> np.ndarray:
    """Return the element-wise planar (CRS-less) overlay ``a op b`` (GEOS OverlayNG).

    ``op`` is intersection, union, difference or symdifference; ``union`` with ``b=None`` is the unary
    union of each element of ``a`` (the dissolve primitive).
    """
    a = np.asarray(a, dtype=object)
    if b is None:
        if op != "union":
            raise ValueError(f"{op} needs two operands")
        return shapely.union_all(a.reshape(-1, 1), grid_size=grid_size, axis=1)
    return PLANAR_OPS[op](a, np.asarray(b, dtype=object), grid_size=grid_size)


INPUT_SIDE, OVERLAY_SIDE = "input", "overlay"
BOTH_SIDES = frozenset({INPUT_SIDE, OVERLAY_SIDE})


def overlay(
    gdf: GeoDataFrame, overlay_gdf: GeoDataFrame, params: OverlayParams, progress: ProgressFn | None = None
) -> AnalysisOutput:
    """Overlay ``gdf`` with ``overlay_gdf`` (see the module docstring for the table).

    Args:
        gdf: input layer, CRS set.
        overlay_gdf: overlay layer, CRS set; reprojected to the input's CRS if it differs.
        params: operation, field selection, ``grid_size`` (in the input CRS's units), ``keep_geom_type``.
        progress: called as ``progress(fraction, "computing")`` after each chunk of features.

    Returns:
        The pieces in the input's CRS, with metadata (operation, counts, repairs).
    """
    return overlay_keyed(gdf, overlay_gdf, params, progress)[0]


def overlay_keyed(
    gdf: GeoDataFrame, overlay_gdf: GeoDataFrame, params: OverlayParams, progress: ProgressFn | None = None,
    *, sides: frozenset[str] = BOTH_SIDES,
) -> tuple[AnalysisOutput, np.ndarray, np.ndarray]:
    """``overlay`` plus each piece's source features (index labels; -1: no such side). ``sides`` limits it to
    the pieces of the input features (pairs, remainders, clips) or of the overlay features (their parts outside
    the input, update's copies): chunks of either layer then make each piece exactly once."""
    progress = progress or no_progress
    overlay_gdf = _same_crs(gdf, overlay_gdf)
    if len(gdf) == 0 and INPUT_SIDE in sides:
        raise EmptyInput("the input has no features", field="input")
    op = params.operation
    a_attrs = _select(gdf, params.input_fields, "input_fields")
    b_attrs = _select(overlay_gdf, params.overlay_fields, "overlay_fields")
    if op in ("clip", "erase"):
        b_attrs = b_attrs.iloc[:, :0]
    a, a_fixed = _prepare(gdf, "input", polygons=op in POLYGONS_ONLY, op=op)
    b, b_fixed = _prepare(overlay_gdf, "overlay", polygons=op != "intersect", op=op)
    if params.pairwise:
        pieces = _pairwise(a, b, op, params.grid_size)
        progress(1.0, "computing")
    else:
        pieces = [(*p, np.full(len(p[0]), -1)) for p in _compute(a, b, op, params.grid_size, progress, sides)]
    geoms, ia, ib, pair = (np.concatenate(x) if x else np.empty(0) for x in zip(*pieces, strict=True))
    ia, ib, pair = ia.astype(np.intp), ib.astype(np.intp), pair.astype(np.intp)
    n_raw = len(geoms)
    if params.keep_geom_type:  # an overlay-side chunk may have no input features at all
        dims_a = shapely.get_dimensions(a[np.maximum(ia, 0)]) if len(a) else np.zeros(len(ia), np.intp)
        geoms = keep_dimension(geoms, np.where(ia >= 0, dims_a, 2))
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms, ia, ib, pair = geoms[keep], ia[keep], ib[keep], pair[keep]
    # Input order; per input: pairs, then its remainder (pairwise: pair by pair, input side first).
    order = np.lexsort((ib < 0, ia < 0, pair)) if params.pairwise else np.lexsort((ib, ib < 0, ia, ia < 0))
    geoms, ia, ib, pair = geoms[order], ia[order], ib[order], pair[order]
    attrs, renamed = _attributes(a_attrs, b_attrs, ia, ib, shared=op in ("update", "xor"))
    if params.pairwise:
        attrs["pair"] = pair
    out = GeoDataFrame(attrs, geometry=GeoSeries(geoms, crs=gdf.crs), crs=gdf.crs)
    out = out.rename_geometry(gdf.geometry.name) if gdf.geometry.name != "geometry" else out
    meta = {
        "operation": op,
        "input_feature_count": len(gdf),
        "overlay_feature_count": len(overlay_gdf),
        "feature_count": len(out),
        "piece_counts": {
            "both": int(((ia >= 0) & (ib >= 0)).sum()),
            "input_only": int(((ia >= 0) & (ib < 0)).sum()),
            "overlay_only": int(((ia < 0) & (ib >= 0)).sum()),
        },
        "dropped_empty": int(n_raw - keep.sum()),
        "repaired_invalid": {"input": a_fixed, "overlay": b_fixed},
        "renamed_fields": renamed,
        "grid_size": params.grid_size,
        "keep_geom_type": params.keep_geom_type,
        "pairwise": params.pairwise,
    }
    labels_a, labels_b = np.asarray(gdf.index), np.asarray(overlay_gdf.index)
    keys_a = np.where(ia >= 0, labels_a[np.maximum(ia, 0)] if len(labels_a) else -1, -1)
    keys_b = np.where(ib >= 0, labels_b[np.maximum(ib, 0)] if len(labels_b) else -1, -1)
    return AnalysisOutput(gdf=out, metadata=meta), keys_a, keys_b


def keep_dimension(geoms: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Return ``geoms`` with only the parts of dimension ``dims`` (per element); nothing left gives None."""
    geoms = np.asarray(geoms, dtype=object).copy()
    fix = (shapely.get_type_id(geoms) == 7) | (shapely.get_dimensions(geoms) != dims)
    if not fix.any():
        return geoms
    parts, idx = shapely.get_parts(geoms[fix], return_index=True)
    pdim = shapely.get_dimensions(parts)
    keep = pdim == dims[fix][idx]
    rebuilt = np.full(int(fix.sum()), None, dtype=object)
    for dim, make in ((0, shapely.multipoints), (1, shapely.multilinestrings), (2, shapely.multipolygons)):
        sel = keep & (pdim == dim)
        if sel.any():
            made = make(parts[sel], indices=idx[sel], out=np.full(len(rebuilt), None, dtype=object))
            has = shapely.get_num_geometries(made) > 0
            rebuilt[has] = made[has]
    single = shapely.get_num_geometries(rebuilt) == 1
    rebuilt[single] = shapely.get_geometry(rebuilt[single], 0)
    geoms[fix] = rebuilt
    return geoms


def _same_crs(gdf: GeoDataFrame, overlay_gdf: GeoDataFrame) -> GeoDataFrame:
    """Return the overlay layer in the input's CRS, transformed as a ``reproject`` task would.

    The operation is chosen for the overlay layer's area, without ballpark: when the best one needs a grid
    that is not installed the analysis fails with ``TransformationUnavailable`` naming the grid. Two layers
    without a CRS are plain coordinates of one plane (SuperMap geometries without a ``prjCoordSys``).
    """
    if gdf.crs is None and overlay_gdf.crs is None:
        return overlay_gdf
    for name, layer in (("input", gdf), ("overlay", overlay_gdf)):
        if layer.crs is None:
            raise MissingCRS(f"the {name} layer has no CRS", field=name)
    if CRS(gdf.crs).equals(CRS(overlay_gdf.crs), ignore_axis_order=True):
        return overlay_gdf
    return reproject_layer(overlay_gdf, CRS(gdf.crs), allow_ballpark=False)[0]


def _select(layer: GeoDataFrame, fields: list[str] | None, field: str) -> pd.DataFrame:
    attrs = pd.DataFrame(layer.drop(columns=layer.geometry.name)).reset_index(drop=True)
    # nullable integer/bool columns, so pieces without this side get <NA> and keep their dtype
    nullable = {
        c: "Int64" if pd.api.types.is_integer_dtype(t) else "boolean"
        for c, t in attrs.dtypes.items()
        if pd.api.types.is_integer_dtype(t) or pd.api.types.is_bool_dtype(t)
    }
    attrs = attrs.astype(nullable)
    if fields is None:
        return attrs
    missing = [f for f in fields if f not in attrs.columns]
    if missing:
        raise InvalidInput(f"{field}: no attribute(s) {', '.join(map(repr, missing))} in the layer", field=field)
    return attrs[list(dict.fromkeys(fields))]


def _prepare(layer: GeoDataFrame, name: str, *, polygons: bool, op: str) -> tuple[np.ndarray, int]:
    """Return the layer's geometries (empties as None, invalid polygons repaired) and the repair count."""
    geoms = np.asarray(layer.geometry.array, dtype=object).copy()
    geoms[shapely.is_empty(geoms)] = None
    present = ~shapely.is_missing(geoms)
    if polygons:
        wrong = present & ~np.isin(shapely.get_type_id(geoms), (3, 6))
        if wrong.any():
            types = sorted({g.geom_type for g in geoms[wrong]})
            raise UnsupportedGeometryType(
                f"operation {op!r} needs polygons in the {name} layer; it has {', '.join(types)} "
                f"({int(wrong.sum())} features)",
                field=name,
            )
    poly = present & np.isin(shapely.get_type_id(geoms), (3, 6))
    bad = poly & ~shapely.is_valid(geoms)
    if bad.any():
        fixed = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
        geoms[bad] = keep_dimension(fixed, np.full(len(fixed), 2))
    return geoms, int(bad.sum())


def _compute(a: np.ndarray, b: np.ndarray, op: str, grid: float | None, progress: ProgressFn,
             sides: frozenset[str] = BOTH_SIDES) -> list[tuple]:
    """Return (geoms, input index, overlay index) piece arrays; -1 marks an absent side."""
    kinds = PIECES[op]
    a_side = INPUT_SIDE in sides
    b_side = "b_rest" in kinds and OVERLAY_SIDE in sides
    tree_b = shapely.STRtree(b) if a_side else None
    steps = max((-(-len(a) // CHUNK_SIZE) if a_side else 0) + (-(-len(b) // CHUNK_SIZE) if b_side else 0), 1)
    done, pieces = 0, []
    try:
        for start in range(0, len(a) if a_side else 0, CHUNK_SIZE):
            idx = np.arange(start, min(start + CHUNK_SIZE, len(a)))
            pieces += _side_pieces(a, idx, b, tree_b, kinds, grid, a_side=True)
            done += 1
            progress(done / steps, "computing")
        if b_side:
            tree_a = shapely.STRtree(a)
            for start in range(0, len(b), CHUNK_SIZE):
                idx = np.arange(start, min(start + CHUNK_SIZE, len(b)))
                pieces += _side_pieces(b, idx, a, tree_a, ("b_rest",), grid, a_side=False)
                done += 1
                progress(done / steps, "computing")
    except shapely.errors.GEOSException as exc:
        raise InvalidGeometry(f"overlay failed ({exc}); try a grid_size (snap rounding)") from exc
    if "b_all" in kinds and OVERLAY_SIDE in sides:
        ib = np.flatnonzero(~shapely.is_missing(b))
        pieces.append((_snap(b[ib], grid), np.full(len(ib), -1), ib))
    return pieces


def _pairwise(a: np.ndarray, b: np.ndarray, op: str, grid: float | None) -> list[tuple]:
    """Pieces of input i against overlay i (or the one overlay feature): (geoms, ia, ib, pair) arrays."""
    if len(b) not in (1, len(a)):
        raise InvalidInput(f"pairwise: the overlay layer needs one feature or as many as the input ({len(a)}), "
                           f"not {len(b)}", field="overlay")
    j_all = np.zeros(len(a), dtype=np.intp) if len(b) == 1 else np.arange(len(a))
    both = ~shapely.is_missing(a) & ~shapely.is_missing(b[j_all])
    i, j = np.flatnonzero(both), j_all[both]
    alone = np.flatnonzero(~shapely.is_missing(a) & ~both)  # an input whose overlay feature is empty
    none_i, none_j = np.full(len(i), -1), np.full(len(j), -1)
    out: list[tuple] = []
    try:
        for kind in PIECES[op]:
            if kind == "pairs":
                out.append((shapely.intersection(a[i], b[j], grid_size=grid), i, j, i))
            elif kind == "a_clip":
                out.append((shapely.intersection(a[i], b[j], grid_size=grid), i, none_i, i))
            elif kind == "a_rest":
                out.append((shapely.difference(a[i], b[j], grid_size=grid), i, none_i, i))
                out.append((_snap(a[alone], grid), alone, np.full(len(alone), -1), alone))
            elif kind == "b_rest":
                out.append((shapely.difference(b[j], a[i], grid_size=grid), none_j, j, i))
            else:  # b_all
                out.append((_snap(b[j], grid), none_j, j, i))
    except shapely.errors.GEOSException as exc:
        raise InvalidGeometry(f"overlay failed ({exc}); try a grid_size (snap rounding)") from exc
    return out


def _side_pieces(
    src: np.ndarray,
    idx: np.ndarray,
    other: np.ndarray,
    tree: Any,
    kinds: tuple,
    grid: float | None,
    a_side: bool,
) -> list[tuple]:
    """Return the pieces of ``src[idx]`` against ``other`` (for the input side, or the overlay side)."""
    idx = idx[~shapely.is_missing(src[idx])]
    qi, qj = tree.query(src[idx], predicate="intersects")
    si = idx[qi]
    out = []

    def piece(g: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple:
        return (g, i, j) if a_side else (g, j, i)

    if "pairs" in kinds:
        out.append(piece(shapely.intersection(src[si], other[qj], grid_size=grid), si, qj))
    if {"a_rest", "b_rest", "a_clip"} & set(kinds):
        unions = _candidate_unions(other, si, qj, grid)
        has = np.zeros(len(src), dtype=bool)
        has[si] = True
        with_c = idx[has[idx]]
        none = np.full(len(idx), -1)
        if "a_clip" in kinds:
            out.append(
                piece(
                    shapely.intersection(src[with_c], unions[with_c], grid_size=grid),
                    with_c,
                    none[: len(with_c)],
                )
            )
        else:
            rest = _snap(src[idx], grid)
            rest[has[idx]] = shapely.difference(src[with_c], unions[with_c], grid_size=grid)
            out.append(piece(rest, idx, none))
    return out


def _candidate_unions(other: np.ndarray, si: np.ndarray, qj: np.ndarray, grid: float | None) -> np.ndarray:
    """Return, indexed by source feature, the union of the ``other`` features paired with it."""
    unions = np.full(int(si.max()) + 1 if len(si) else 0, None, dtype=object)
    counts = np.bincount(si, minlength=len(unions))
    one = counts == 1
    first = np.full(len(unions), -1)
    first[si[::-1]] = qj[::-1]
    unions[one] = other[first[one]]
    for i in np.flatnonzero(counts > 1):
        unions[i] = shapely.union_all(other[qj[si == i]], grid_size=grid)
    return unions


def _snap(geoms: np.ndarray, grid: float | None) -> np.ndarray:
    return shapely.set_precision(geoms, grid) if grid else geoms.copy()


def _attributes(
    a_attrs: pd.DataFrame, b_attrs: pd.DataFrame, ia: np.ndarray, ib: np.ndarray, *, shared: bool
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Return the pieces' attribute table and the renames applied (``{new: original}``)."""
    renamed: dict[str, str] = {}
    if not shared:
        clash = set(a_attrs.columns) & set(b_attrs.columns)
        a_attrs = a_attrs.rename(columns={c: f"input_{c}" for c in clash})
        b_attrs = b_attrs.rename(columns={c: f"overlay_{c}" for c in clash})
        renamed = {**{f"input_{c}": c for c in clash}, **{f"overlay_{c}": c for c in clash}}
        b_attrs = b_attrs.drop(columns=[c for c in b_attrs.columns if c in a_attrs.columns])
        return pd.concat([_take(a_attrs, ia), _take(b_attrs, ib)], axis=1), renamed
    a_part = _take(a_attrs, ia[ia >= 0])
    b_part = _take(b_attrs, ib[ia < 0])
    out = pd.concat([a_part, b_part], ignore_index=True) if len(b_part) else a_part
    return out.reindex(columns=list(dict.fromkeys([*a_attrs.columns, *b_attrs.columns]))), renamed


def _take(attrs: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
    """Return ``attrs`` rows ``idx``; -1 gives a null row."""
    return attrs.reindex(idx).reset_index(drop=True)
