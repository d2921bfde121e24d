"""Buffer: grow (or, with a negative distance, erode) every feature by a distance with a unit.

Strategies (recorded in the result metadata as ``strategy``):

* ``"local-utm/aeqd per feature"``: geographic data, linear unit. Each feature is buffered in its own local
  CRS (``localcrs``: its UTM zone, or an azimuthal equidistant centred on it) and brought back to lon/lat,
  split at the antimeridian and closed around poles; ``max_scale_error`` is the largest |scale - 1| over
  any feature's working extent (<= ~1e-3: polygons too large for one projection are buffered through
  their boundary pieces; a single line or point spread over thousands of km still uses one aeqd, and its
  larger error is what is reported). ``strategy_counts`` counts features by their worst part's CRS kind.
* ``"projected"``: projected data. The buffer is planar in that CRS, the distance converted with the CRS's
  axis unit (metres, US survey feet, ...); ``max_scale_error`` is ``None`` (the CRS's own distortion is the
  dataset owner's choice).
* ``"planar-crs-units"``: ``unit="crs"``: a planar buffer in the coordinates' own units, exactly what PostGIS
  ``ST_Buffer(geometry, value)`` computes (no antimeridian or pole handling); data without a CRS too.
* ``"planar-degrees"``: geographic data with ``unit="degrees"``: a planar buffer in lon/lat degrees (so an
  east-west "degree" shrinks with latitude); results are split at +-180 and clipped to |lat| <= 90.

Features whose buffer is empty (negative buffers that erode a feature away, empty or null inputs) are
dropped and counted in ``dropped_empty``. Attributes are kept; with ``dissolve`` the output has one row per
group with the ``dissolve_by`` column (if any) and ``feature_count``. ``right_distance`` buffers each side
of a line by its own distance (flat ends): the union of a left and a right single-sided buffer.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame, GeoSeries
from pydantic import Field, field_validator, model_validator
from pyproj import CRS

from geoservice.analysis import localcrs
from geoservice.analysis.base import AnalysisOutput, ProgressFn, no_progress, with_geometry
from geoservice.analysis.errors import EmptyInput, MissingCRS, UnsupportedGeometryType
from geoservice.analysis.params import Distance, LengthUnit, StrictModel
from geoservice.errors import InvalidInput

#: Largest |distance| accepted: 1,000 km for linear units (a local CRS stays within ~2.5% scale error),
#: 10 degrees for ``unit="degrees"`` (about 1,100 km at the equator).
MAX_DISTANCE_M = 1_000_000.0
MAX_DISTANCE_DEG = 10.0
#: a planar distance in a projected CRS's units: half the Earth's circumference
MAX_CRS_DISTANCE_M = 20_000_000.0
CHUNK_SIZE = 2_000
LINE_TYPES = ("LineString", "MultiLineString", "LinearRing")

CapStyle = Literal["round", "flat", "square"]
JoinStyle = Literal["round", "mitre", "bevel"]


class BufferParams(StrictModel):
    """Settings of ``buffer`` (a buffer task adds its ``input`` layer and ``output_name``)."""

    distance: Distance = Field(description='e.g. {"value": 500, "unit": "m"}; negative erodes polygons')
    cap_style: CapStyle = "round"
    join_style: JoinStyle = "round"
    mitre_limit: float = Field(default=5.0, gt=0, description="only for join_style='mitre'")
    quad_segs: int = Field(default=8, ge=1, le=64, description="segments per quarter circle (GEOS/PostGIS: 8)")
    single_sided: bool = Field(default=False, description="lines only; distance > 0 left side, < 0 right")
    dissolve: bool = Field(default=False, description="union all results (or per dissolve_by group)")
    dissolve_by: str | None = Field(default=None, min_length=1, description="attribute to dissolve by")
    right_distance: Distance | None = Field(
        default=None,
        description="lines only: buffer the right side by this distance (same unit, >= 0) and the left side by "
        "'distance' (> 0), with flat ends (SuperMap's FLAT end type with unequal sides)",
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_unit(cls, data: Any) -> Any:
        """Accept the flat form ``"distance": 500, "unit": "m"``; reject a bare number without a unit."""
        if not isinstance(data, dict):
            return data
        dist = data.get("distance")
        is_number = isinstance(dist, int | float) and not isinstance(dist, bool)
        if "unit" in data:
            if not is_number:
                raise ValueError(
                    'distance: give the unit either inside \'distance\' ({"value": 500, "unit": "m"}) '
                    "or next to a plain number ('distance': 500, 'unit': 'm'), not both"
                )
            rest = {k: v for k, v in data.items() if k != "unit"}
            return {**rest, "distance": {"value": dist, "unit": data["unit"]}}
        if is_number:
            raise ValueError(
                'distance: a bare number has no unit; give {"value": 500, "unit": "m"} or add '
                "'unit' (m, km, mi, ft, nmi or degrees)"
            )
        return data

    @field_validator("distance")
    @classmethod
    def _distance_range(cls, v: Distance) -> Distance:
        if v.value == 0:
            raise ValueError("distance must not be zero")
        if v.unit is LengthUnit.crs:
            return v
        if v.unit is LengthUnit.degrees:
            if abs(v.value) > MAX_DISTANCE_DEG:
                raise ValueError(f"distance must be at most {MAX_DISTANCE_DEG:g} degrees in absolute value")
        elif abs(v.metres()) > MAX_DISTANCE_M:
            raise ValueError("distance must be at most 1,000 km in absolute value")
        return v

    @model_validator(mode="after")
    def _sides(self) -> BufferParams:
        right = self.right_distance
        if right is None:
            return self
        if right.unit is not self.distance.unit:
            raise ValueError("right_distance must have the same unit as distance")
        if self.distance.value <= 0 or right.value < 0:
            raise ValueError("with right_distance, distance must be > 0 and right_distance >= 0")
        if self.single_sided:
            raise ValueError("right_distance already makes a one-sided buffer per side; drop single_sided")
        return self


def buffer_planar(
    geoms: np.ndarray,
    distance: float,
    *,
    quad_segs: int = 8,
    cap_style: CapStyle = "round",
    join_style: JoinStyle = "round",
    mitre_limit: float = 5.0,
    single_sided: bool = False,
) -> np.ndarray:
    """Return the planar (CRS-less) buffers of ``geoms`` by ``distance`` in coordinate units (GEOS)."""
    return shapely.buffer(
        np.asarray(geoms, dtype=object),
        distance,
        quad_segs=quad_segs,
        cap_style=cap_style,
        join_style=join_style,
        mitre_limit=mitre_limit,
        single_sided=single_sided,
    )


def buffer(gdf: GeoDataFrame, params: BufferParams, progress: ProgressFn | None = None) -> AnalysisOutput:
    """Buffer every feature of ``gdf`` (see the module docstring for the strategies).

    Args:
        gdf: input layer; its CRS must be set. Geographic data is x = lon, y = lat in degrees.
        params: distance (with unit), styles, dissolve options.
        progress: called as ``progress(fraction, "computing")`` after each chunk of features.

    Returns:
        The buffered layer in the input's CRS, and metadata (strategy, counts, max_scale_error, styles).
    """
    progress = progress or no_progress
    series = gdf.geometry  # looked up once: each GeoDataFrame.geometry/.crs access costs ~20 us
    crs = _require_crs(series.crs, params)
    if len(gdf) == 0:
        raise EmptyInput("the input has no features", field="input")
    if params.dissolve_by is not None and params.dissolve_by not in gdf.columns:
        raise InvalidInput(f"dissolve_by: no attribute {params.dissolve_by!r} in the input", field="dissolve_by")
    geoms = np.asarray(series.array, dtype=object)
    if params.single_sided or params.right_distance is not None:
        _require_lines(geoms, "right_distance" if params.right_distance is not None else "single_sided")
    runs = [_strategy(crs, p) for p in _sides(params)]
    strategy = runs[0][0]
    results = np.empty(len(geoms), dtype=object)
    kinds = np.full(len(geoms), strategy, dtype=object)
    scale_err = np.zeros(len(geoms))
    for start in range(0, len(geoms), CHUNK_SIZE):
        sl = slice(start, start + CHUNK_SIZE)
        parts = [run(geoms[sl]) for _, run in runs]
        results[sl], kinds[sl], scale_err[sl] = parts[0]
        for other, _, err in parts[1:]:  # the other side of a two-distance line buffer
            results[sl] = shapely.union(results[sl], other)
            scale_err[sl] = np.fmax(scale_err[sl], err)
        progress(min(start + CHUNK_SIZE, len(geoms)) / len(geoms), "computing")
    keep = ~(shapely.is_missing(results) | shapely.is_empty(results))
    out = _assemble(gdf, series.name, crs, results, keep, params)
    meta = _metadata(params, strategy, kinds[keep], scale_err[keep], len(gdf), len(out))
    meta["dropped_empty"] = int((~keep).sum())
    return AnalysisOutput(gdf=out, metadata=meta)


def _sides(params: BufferParams) -> list[BufferParams]:
    """The buffers to union per feature: ``params`` itself, or its left and right sides (``right_distance``)."""
    right = params.right_distance
    if right is None:
        return [params]
    sides = [params.model_copy(update={"single_sided": True, "right_distance": None})]
    if right.value > 0:
        flipped = Distance(value=-right.value, unit=right.unit)
        sides.append(params.model_copy(update={"distance": flipped, "single_sided": True, "right_distance": None}))
    return sides


def _require_crs(crs: CRS | None, params: BufferParams) -> CRS | None:
    if crs is None:
        if params.distance.unit is LengthUnit.crs:
            return None  # coordinate units, planar: no CRS needed
        raise MissingCRS("the input has no CRS; set one before buffering (or give the distance in unit 'crs')",
                         field="input")
    return crs


def _require_lines(geoms: np.ndarray, field: str) -> None:
    present = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    types = set(shapely.get_type_id(present).tolist()) - {1, 2, 5}
    if types:
        names = sorted({g.geom_type for g in present if g.geom_type not in LINE_TYPES})
        raise UnsupportedGeometryType(
            f"{field} applies to lines only; the input has {', '.join(names)}",
            field=field,
        )


def _strategy(crs: CRS | None, params: BufferParams) -> tuple[str, Any]:
    """Return the strategy name and a chunk function ``geoms -> (results, kinds, scale_errors)``."""
    dist = params.distance
    style = {
        "quad_segs": params.quad_segs,
        "cap_style": params.cap_style,
        "join_style": params.join_style,
        "mitre_limit": params.mitre_limit,
        "single_sided": params.single_sided,
    }

    def planar(d: float) -> Any:
        return lambda g: buffer_planar(g, d, **style)

    if dist.unit is LengthUnit.crs and crs is not None:
        _check_crs_units(dist.value, crs)
    if dist.unit is LengthUnit.crs or crs is None:
        op = planar(dist.value)
        return "planar-crs-units", lambda g: (op(g), "planar-crs-units", np.nan)
    if crs.is_geographic:
        if dist.unit is LengthUnit.degrees:
            op = planar(dist.value)
            return "planar-degrees", lambda g: (localcrs.split_antimeridian(op(g)), "planar-degrees", np.nan)
        metres = dist.metres()

        ring_style = {**style, "cap_style": "round", "single_sided": False}

        def ring_op(g: np.ndarray) -> np.ndarray:
            return buffer_planar(g, abs(metres), **ring_style)

        def local(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            res = localcrs.apply_local(g, crs, metres, planar(metres), None if params.single_sided else ring_op)
            return res.geoms, res.kinds, res.scale_error

        return "local-utm/aeqd per feature", local
    if dist.unit is LengthUnit.degrees:
        raise InvalidInput(
            "distance: 'degrees' needs geographic (lon/lat) data; this CRS is projected, use a length unit",
            field="distance",
        )
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    op = planar(dist.metres() / factor)
    return "projected", lambda g: (op(g), "projected", np.nan)


def _check_crs_units(value: float, crs: CRS) -> None:
    """A distance in the CRS's own units (iServer's geometry routes) is planar, so it may be as large as the
    CRS is wide: up to 180 degrees in lon/lat (beyond, the buffer covers more than the Earth), and up to
    Earth's half circumference (20,000 km) in a projected CRS."""
    if crs.is_geographic:
        if abs(value) > 180.0:
            raise InvalidInput(f"distance: {value:g} degrees is larger than the Earth (at most 180 degrees in "
                               "lon/lat)", field="distance")
        return
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    if abs(value * factor) > MAX_CRS_DISTANCE_M:
        raise InvalidInput(f"distance: {value:g} CRS units ({value * factor:.4g} m) is larger than the Earth "
                           f"(at most {MAX_CRS_DISTANCE_M / 1000:,.0f} km)", field="distance")


def _assemble(gdf: GeoDataFrame, geom_col: str, crs: CRS | None, results: np.ndarray, keep: np.ndarray,
              params: BufferParams) -> GeoDataFrame:
    if not (params.dissolve or params.dissolve_by):
        return with_geometry(gdf if keep.all() else gdf.loc[keep], results[keep], crs, geom_col)
    kept = results[keep]
    if params.dissolve_by is None:
        attrs = pd.DataFrame({"feature_count": [len(kept)]})
        merged = [shapely.union_all(kept)]
    else:
        keys = gdf.loc[keep, params.dissolve_by].reset_index(drop=True)
        groups = keys.groupby(keys, dropna=False, sort=True).indices
        merged = [shapely.union_all(kept[idx]) for idx in groups.values()]
        attrs = pd.DataFrame(
            {
                params.dissolve_by: [keys.iloc[idx[0]] for idx in groups.values()],
                "feature_count": [len(idx) for idx in groups.values()],
            }
        )
    out = GeoDataFrame(attrs, geometry=GeoSeries(merged, crs=crs), crs=crs)
    return out.rename_geometry(geom_col) if geom_col != "geometry" else out


def _metadata(
    params: BufferParams, strategy: str, kinds: np.ndarray, scale_err: np.ndarray, n_in: int, n_out: int
) -> dict[str, Any]:
    counts = {str(k): int(v) for k, v in zip(*np.unique(kinds.astype(str), return_counts=True), strict=True)}
    finite = scale_err[np.isfinite(scale_err)] if strategy.startswith("local") else np.array([])
    return {
        "operation": "buffer",
        "strategy": strategy,
        "strategy_counts": counts,
        "max_scale_error": float(finite.max()) if len(finite) else None,
        "distance": {"value": params.distance.value, "unit": params.distance.unit.value},
        "cap_style": params.cap_style,
        "join_style": params.join_style,
        "mitre_limit": params.mitre_limit,
        "quad_segs": params.quad_segs,
        "single_sided": params.single_sided,
        "right_distance": None if params.right_distance is None else {
            "value": params.right_distance.value, "unit": params.right_distance.unit.value},
        "dissolve": bool(params.dissolve or params.dissolve_by),
        "dissolve_by": params.dissolve_by,
        "antimeridian": "split at +-180 into MultiPolygons (RFC 7946 section 3.1.9)",
        "input_feature_count": n_in,
        "feature_count": n_out,
    }
