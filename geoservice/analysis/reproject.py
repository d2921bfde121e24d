"""Reproject a layer to another CRS with PROJ, vectorised over all coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame, GeoSeries
from pydantic import Field, ValidationInfo, field_validator
from pyproj import CRS, Transformer
from pyproj.enums import TransformDirection

from geoservice.analysis.base import AnalysisOutput, ProgressFn, no_progress
from geoservice.analysis.crs import (
    area_of_interest,
    authority_order_is_yx,
    crs_label,
    get_transformer,
    parse_crs,
    same_crs,
)
from geoservice.analysis.errors import (
    AnalysisInputError,
    EmptyInput,
    InvalidGeometry,
    MissingCRS,
    UnknownCRS,
    UnsupportedGeometryType,
)
from geoservice.analysis.params import StrictModel
from geoservice.analysis.summary import geodesic_summary

#: Coordinates transformed per PROJ call; progress is reported after each chunk.
CHUNK_SIZE = 200_000

_CRS_HELP = "EPSG code (4326 or 'EPSG:4326'), 'OGC:CRS84', another AUTHORITY:CODE, WKT, PROJJSON or PROJ string"


class ReprojectParams(StrictModel):
    """Settings of the ``reproject`` operation (a task adds its ``input`` layer and ``output_name``)."""

    target_crs: str | int = Field(description=f"CRS to transform to: {_CRS_HELP}")
    source_crs: str | int | None = Field(
        default=None,
        description="CRS of the input, used only when the input has none (otherwise it must match it); " + _CRS_HELP,
    )
    always_xy: bool = Field(
        default=True,
        description="Axis order of the output coordinates. true: x/y, i.e. longitude/latitude or "
        "easting/northing, as GeoJSON, PostGIS and GIS software expect. false: the target CRS's "
        "authority order, e.g. latitude/longitude for EPSG:4326. Input coordinates are always read as "
        "x/y.",
    )
    allow_ballpark: bool = Field(
        default=False,
        description="When the most accurate transformation needs a grid file that is not installed, "
        "use the best available one instead (possibly a ballpark one, accurate only to tens or "
        "hundreds of metres) rather than failing. The result metadata records what was used.",
    )

    @field_validator("target_crs", "source_crs", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a CRS must be an EPSG code or a string, not a boolean")
        return value

    @field_validator("target_crs", "source_crs")
    @classmethod
    def _known_crs(cls, value: str | int | None, info: ValidationInfo) -> str | int | None:
        if value is not None:
            try:
                parse_crs(value, field=info.field_name or "crs")
            except UnknownCRS as exc:
                raise ValueError(exc.detail) from None
        return value


def reproject(gdf: GeoDataFrame, params: ReprojectParams, progress: ProgressFn | None = None) -> AnalysisOutput:
    """Transform every geometry of ``gdf`` to ``params.target_crs``.

    Args:
        gdf: input layer, in its own CRS (``params.source_crs`` if it has none); coordinates x/y.
        params: target CRS, axis order and ballpark policy.
        progress: called with (fraction 0-1, "computing") after each chunk of coordinates.

    Returns:
        The layer in the target CRS (same index, columns and attributes) and metadata: source and
        target CRS labels, the transformation used, feature count, extent in the target CRS, geometry
        types and the geodesic area (m²) or length (m) on the WGS 84 ellipsoid.

    Raises:
        MissingCRS, EmptyInput, UnknownCRS, TransformationUnavailable, InvalidGeometry,
        UnsupportedGeometryType, AnalysisInputError (a coordinate outside the transformation's domain).
    """
    report = progress or no_progress
    src = _source_crs(gdf, params)
    dst = parse_crs(params.target_crs, field="target_crs")
    if len(gdf) == 0:
        raise EmptyInput("the input has no features", field="input")
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    _reject_measured(gdf, geoms)
    coords, owner = shapely.get_coordinates(geoms, include_z=True, return_index=True)
    _check_finite_input(gdf, coords, owner)
    given = coords
    if not params.always_xy and authority_order_is_yx(src):
        coords = coords[:, [1, 0, 2]]  # stored x/y -> the source's authority order
    transformer, transformation = get_transformer(
        src,
        dst,
        always_xy=params.always_xy,
        allow_ballpark=params.allow_ballpark,
        area_of_interest=area_of_interest(coords, src, always_xy=params.always_xy),
    )
    report(0.0, "computing")
    out_coords = np.empty_like(coords)
    for start in range(0, len(coords), CHUNK_SIZE):
        chunk = slice(start, min(start + CHUNK_SIZE, len(coords)))
        out_coords[chunk] = transform_coordinates(coords[chunk], transformer)
        _check_finite_output(gdf, given, out_coords, owner, chunk, src, dst)
        report(chunk.stop / len(coords), "computing")
    if len(coords) == 0:  # only empty geometries
        report(1.0, "computing")
    out = gdf.copy()
    out[gdf.geometry.name] = GeoSeries(shapely.set_coordinates(geoms.copy(), out_coords), index=gdf.index, crs=dst)
    metadata = {
        "source_crs": crs_label(src),
        "target_crs": crs_label(dst),
        "axis_order": "xy" if params.always_xy else "authority",
        "transformation": transformation,
        **geodesic_summary(out, always_xy=params.always_xy),
        "strategy": "pyproj",
    }
    return AnalysisOutput(gdf=out, metadata=metadata)


def transform_coordinates(
    coords: np.ndarray,
    transformer: Transformer,
    *,
    direction: TransformDirection | str = TransformDirection.FORWARD,
) -> np.ndarray:
    """Transform an ``(N, 2)`` or ``(N, 3)`` coordinate array with ``transformer``.

    Args:
        coords: coordinates in the transformer's source axis order and units (degrees for angles).
            A NaN z marks a 2D coordinate: it is transformed at height 0 and its z stays NaN.
        transformer: the PROJ transformation.
        direction: FORWARD or INVERSE.

    Returns:
        A new array of the same shape. Coordinates PROJ cannot transform are inf or NaN (no exception).
    """
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"expected an (N, 2) or (N, 3) array of coordinates, got shape {coords.shape}")
    out = coords.copy()
    x, y = out[:, 0].copy(), out[:, 1].copy()  # contiguous buffers PROJ writes into
    z = no_z = None
    if coords.shape[1] == 3:
        no_z = np.isnan(coords[:, 2])
        if not no_z.all():
            z = np.where(no_z, 0.0, coords[:, 2])
    if len(coords):
        transformer.transform(x, y, z, inplace=True, errcheck=False, direction=direction)
    out[:, 0], out[:, 1] = x, y
    if z is not None:
        out[:, 2] = np.where(no_z, np.nan, z)
    return out


def _source_crs(gdf: GeoDataFrame, params: ReprojectParams) -> CRS:
    if params.source_crs is None:
        if gdf.crs is None:
            raise MissingCRS("the input has no CRS; give 'source_crs'", field="source_crs")
        return gdf.crs
    override = parse_crs(params.source_crs, field="source_crs")
    if gdf.crs is not None and not gdf.crs.equals(override, ignore_axis_order=True):
        raise AnalysisInputError(
            f"'source_crs' ({crs_label(override)}) differs from the input's CRS ({crs_label(gdf.crs)}); "
            "it applies only to inputs without a CRS (for inline GeoJSON set 'input.crs')",
            field="source_crs",
        )
    return override


def _feature(gdf: GeoDataFrame, position: int) -> int | str:
    label = gdf.index[position]
    return int(label) if isinstance(label, int | np.integer) else str(label)


def _reject_measured(gdf: GeoDataFrame, geoms: np.ndarray) -> None:
    measured = np.flatnonzero(shapely.has_m(geoms))
    if len(measured):
        feature = _feature(gdf, int(measured[0]))
        raise UnsupportedGeometryType(
            f"feature {feature} has measured (M) coordinates, which reprojection does not support",
            feature=feature,
        )


def _check_finite_input(gdf: GeoDataFrame, coords: np.ndarray, owner: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(coords[:, :2]).all(axis=1) | np.isinf(coords[:, 2]))
    if len(bad):
        feature = _feature(gdf, int(owner[bad[0]]))
        raise InvalidGeometry(f"feature {feature} has a non-finite coordinate", feature=feature)


def _check_finite_output(
    gdf: GeoDataFrame,
    coords: np.ndarray,
    out_coords: np.ndarray,
    owner: np.ndarray,
    chunk: slice,
    src: CRS,
    dst: CRS,
) -> None:
    got, given = out_coords[chunk], coords[chunk]
    bad = ~np.isfinite(got[:, :2]).all(axis=1) | (np.isfinite(given[:, 2]) & ~np.isfinite(got[:, 2]))
    if bad.any():
        first = chunk.start + int(np.argmax(bad))
        feature = _feature(gdf, int(owner[first]))
        x, y = coords[first, 0], coords[first, 1]
        raise AnalysisInputError(
            f"feature {feature} has a coordinate ({x:.10g}, {y:.10g}) that cannot be transformed from "
            f"{_short_label(src)} to {_short_label(dst)}: it is outside the area where the CRS or the "
            "transformation is defined",
            feature=feature,
            field="target_crs",
        )


def _short_label(crs: CRS) -> str:
    label = crs_label(crs)
    if len(label) <= 80:
        return label
    return crs.srs if len(crs.srs) <= 80 else (crs.name or "custom CRS")


# --------------------------------------------------------------------------------------------------
# One engine for every path that returns coordinates: reads, exports, previews, overlay alignment
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reprojection:
    """A transformation chosen once, as the ``reproject`` task chooses it, and applied to many batches.

    Coordinates are x/y on both sides (longitude/latitude in degrees, easting/northing in CRS units).
    ``transformer`` is None when source and target are the same CRS: applying it is an exact no-op.
    ``transformation`` is what ``get_transformer`` says about it (None for the no-op), the same record a
    ``reproject`` task keeps in its result metadata.
    """

    source: CRS
    target: CRS
    transformer: Transformer | None = None
    transformation: dict[str, Any] | None = None


def plan_reprojection(
    source: CRS,
    target: CRS,
    *,
    allow_ballpark: bool,
    area_of_interest: tuple[float, float, float, float] | None,
) -> Reprojection:
    """Choose the transformation from ``source`` to ``target`` for x/y data in ``area_of_interest``.

    Args:
        source: CRS of the coordinates.
        target: CRS to answer in.
        allow_ballpark: use the best available operation when the best one needs a missing grid.
        area_of_interest: ``(west, south, east, north)`` in degrees covering the data (see
            ``area_of_interest`` / ``bounds_area_of_interest``), or None.

    Returns:
        The pinned choice (an exact no-op when ``same_crs(source, target)``).

    Raises:
        TransformationUnavailable: as ``get_transformer``.
    """
    if same_crs(source, target):
        return Reprojection(source, target)
    transformer, transformation = get_transformer(
        source, target, always_xy=True, allow_ballpark=allow_ballpark, area_of_interest=area_of_interest
    )
    return Reprojection(source, target, transformer, transformation)


def reproject_layer(
    gdf: GeoDataFrame, target: CRS, *, allow_ballpark: bool, plan: Reprojection | None = None
) -> tuple[GeoDataFrame, dict[str, Any] | None]:
    """Transform ``gdf`` (x/y, its CRS set) to ``target`` with the pinned choice.

    Args:
        gdf: the layer, in its own CRS.
        target: the CRS to answer in.
        allow_ballpark: see ``plan_reprojection`` (unused when ``plan`` is given).
        plan: a choice made once for many batches (e.g. from a dataset's stored extent); without one
            the choice is made for the area ``gdf`` covers.

    Returns:
        The layer in ``target`` (same index and attributes; z transformed too) and the transformation
        used (None when nothing was transformed).

    Raises:
        MissingCRS, TransformationUnavailable, AnalysisInputError (a coordinate outside the domain).
    """
    if gdf.crs is None:
        raise MissingCRS("the layer has no CRS", field="crs")
    source = CRS.from_user_input(gdf.crs)
    if plan is None and len(gdf) and not same_crs(source, target):
        coords = shapely.get_coordinates(np.asarray(gdf.geometry.values), include_z=True)
        aoi = area_of_interest(coords, source)
        plan = plan_reprojection(source, target, allow_ballpark=allow_ballpark, area_of_interest=aoi)
    if plan is None or plan.transformer is None:  # nothing to transform
        return gdf.set_crs(target, allow_override=True), None
    geoms = reproject_geometries(np.asarray(gdf.geometry.values, dtype=object), plan, index=gdf.index)
    out = gdf.copy()
    out[gdf.geometry.name] = GeoSeries(geoms, index=gdf.index, crs=target)
    return out.set_crs(target, allow_override=True), plan.transformation


def reproject_geometries(geoms: np.ndarray, plan: Reprojection, *, index: Any = None) -> np.ndarray:
    """Transform a geometry array with ``plan`` (x/y coordinates; a NaN z stays 2D).

    The coordinates go through ``transform_coordinates`` with (N, 3) arrays, exactly as in ``reproject``,
    so a read and a task that use the same operation give bit-identical coordinates.

    Raises:
        AnalysisInputError: a coordinate cannot be transformed; ``feature`` is its label in ``index``.
    """
    if plan.transformer is None:
        return geoms
    coords, owner = shapely.get_coordinates(geoms, include_z=True, return_index=True)
    out = transform_coordinates(coords, plan.transformer)
    labels = GeoDataFrame(index=index if index is not None else pd.RangeIndex(len(geoms)))
    _check_finite_output(labels, coords, out, owner, slice(0, len(coords)), plan.source, plan.target)
    return shapely.set_coordinates(geoms.copy(), out)
