"""CRS parsing, labelling and cached transformer selection for the analysis core.

Transformations are chosen with PROJ's own ranking (``TransformerGroup``), restricted to the area the
data covers when it is known, so that a regional datum shift is never applied to data outside its
region. The best operation may need a grid file that is not installed (PROJ network access stays off):
then we refuse, naming the grid, unless the caller allows a less accurate fallback.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError
from pyproj.transformer import AreaOfInterest, TransformerGroup

from geoservice.analysis.errors import TransformationUnavailable, UnknownCRS

#: Lon/lat CRS (east, north axis order) used for areas of interest and geodesic measures.
CRS84 = CRS.from_user_input("OGC:CRS84")

_MAX_CRS_TEXT = 100_000
_MAX_CACHED_TEXT = 2_000
_AUTH_CODE = re.compile(r"^\s*(?:(?P<auth>[A-Za-z][A-Za-z0-9_]*)\s*:\s*)?(?P<code>[^:\s]+)\s*$")
_AOI_SAMPLE = 10_000


def parse_crs(value: str | int, *, field: str) -> CRS:
    """Parse an EPSG code (``4326``, ``"4326"``, ``"EPSG:4326"``), ``"OGC:CRS84"``, WKT, PROJJSON or PROJ string.

    Args:
        value: the CRS as given by the user.
        field: name of the request field, reported in the error.

    Returns:
        The CRS; it has at least two (horizontal) axes.

    Raises:
        UnknownCRS: the value is not a CRS PROJ knows, or it is not horizontal (e.g. a vertical CRS).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UnknownCRS(f"a CRS must be an EPSG code or a string, not {type(value).__name__}", field=field)
    if isinstance(value, int):
        if value <= 0:
            raise UnknownCRS(f"unknown EPSG code {value}: EPSG codes are positive integers", field=field)
        text = f"EPSG:{value}"
    else:
        text = value.strip()
        if not text:
            raise UnknownCRS("the CRS is empty", field=field)
        if len(text) > _MAX_CRS_TEXT:
            raise UnknownCRS(f"the CRS definition is longer than {_MAX_CRS_TEXT} characters", field=field)
        if text.isdigit():
            text = f"EPSG:{text}"
    try:
        crs = _parse_cached(text) if len(text) <= _MAX_CACHED_TEXT else _parse_cached.__wrapped__(text)
    except CRSError as exc:
        raise UnknownCRS(_parse_error_detail(text, exc), field=field) from None
    if len(crs.axis_info) < 2:
        raise UnknownCRS(f"{_short(text)} is a {crs.type_name}; a horizontal (2D or 3D) CRS is needed", field=field)
    return crs


@lru_cache(maxsize=512)
def _parse_cached(text: str) -> CRS:
    # CRS objects are immutable and thread-safe; parsing one costs milliseconds (database lookups).
    with warnings.catch_warnings():
        # '+init=epsg:XXXX' is deprecated in pyproj; we accept it (it means lon/lat order) quietly.
        warnings.simplefilter("ignore", FutureWarning)
        return CRS.from_user_input(text)


def _parse_error_detail(text: str, exc: CRSError) -> str:
    message = str(exc)
    match = _AUTH_CODE.match(text)
    if "crs not found" in message and match and match.group("auth"):
        auth = match.group("auth").upper()
        if auth == "EPSG":
            return f"unknown EPSG code {match.group('code')}"
        return f"unknown CRS code {auth}:{match.group('code')}"
    reason = message.split("proj_create: ", 1)[-1].rstrip(")") if "proj_create: " in message else message
    return f"cannot parse {_short(text)!r} as a CRS ({reason}); give an EPSG code, WKT or a PROJ string"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crs_label(crs: CRS) -> str:
    """Return ``AUTHORITY:CODE`` (e.g. ``EPSG:4326``, ``OGC:CRS84``) when it identifies ``crs`` exactly, else WKT."""
    return _label_cached(_CRSKey(crs))


@lru_cache(maxsize=512)
def _label_cached(key: _CRSKey) -> str:
    # Identifying a CRS searches the database (milliseconds); labels are asked for on every task.
    authority = key.crs.to_authority(min_confidence=100)
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return key.crs.to_wkt()


def is_geographic(crs: CRS) -> bool:
    """Return whether the horizontal coordinates of ``crs`` are angular (longitude/latitude)."""
    return bool(crs.is_geographic)


def authority_order_is_yx(crs: CRS) -> bool:
    """Return whether the authority axis order of ``crs`` puts northing/latitude first (e.g. EPSG:4326)."""
    direction = crs.axis_info[0].direction.lower() if crs.axis_info else ""
    return direction in ("north", "south")


def get_transformer(
    src: CRS,
    dst: CRS,
    *,
    always_xy: bool,
    allow_ballpark: bool,
    area_of_interest: tuple[float, float, float, float] | None = None,
) -> tuple[Transformer, dict[str, Any]]:
    """Return the best available transformer from ``src`` to ``dst`` (cached) and a description of it.

    Args:
        src: source CRS.
        dst: target CRS.
        always_xy: True: coordinates are x/y (lon/lat, easting/northing) on both sides;
            False: each CRS's authority axis order (e.g. lat/lon for EPSG:4326).
        allow_ballpark: when the best operation needs a grid that is not installed, use the best
            available one (possibly a ballpark one) instead of raising.
        area_of_interest: ``(west, south, east, north)`` in degrees of longitude/latitude covering the
            data (west > east crosses the antimeridian); it restricts the choice to operations valid there.

    Returns:
        The transformer (thread-safe) and ``{"pipeline", "description", "accuracy_m", "ballpark",
        "best_available", "grids_missing", "area_of_use"}``.

    Raises:
        TransformationUnavailable: the best operation needs a missing grid and ``allow_ballpark`` is
            false, or there is no usable operation at all.
    """
    aoi = _round_aoi(area_of_interest) if area_of_interest is not None else None
    transformer, info = _cached_transformer(_CRSKey(src), _CRSKey(dst), always_xy, allow_ballpark, aoi)
    return transformer, dict(info, grids_missing=list(info["grids_missing"]))


class _CRSKey:
    """Cache key for a CRS: its exact definition.

    ``CRS.__eq__`` means "equivalent" and its hash is the WKT, which cannot express everything a PROJ
    string can (e.g. ``+proj=tmerc +approx`` and ``+proj=etmerc`` have the same WKT), so CRS objects
    themselves would share cache entries between different transformations.
    """

    __slots__ = ("crs", "text")

    def __init__(self, crs: CRS) -> None:
        self.crs = crs
        self.text = crs.srs

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CRSKey) and other.text == self.text


@lru_cache(maxsize=1024)
def _cached_transformer(
    src_key: _CRSKey,
    dst_key: _CRSKey,
    always_xy: bool,
    allow_ballpark: bool,
    aoi: tuple[float, float, float, float] | None,
) -> tuple[Transformer, dict[str, Any]]:
    src, dst = src_key.crs, dst_key.crs
    with warnings.catch_warnings():
        # TransformerGroup warns when the best operation is unavailable; we report that ourselves.
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(
            src,
            dst,
            always_xy=always_xy,
            allow_ballpark=allow_ballpark,
            area_of_interest=AreaOfInterest(*aoi) if aoi is not None else None,
        )
    missing: tuple[str, ...] = ()
    if not group.best_available and group.unavailable_operations:
        best = group.unavailable_operations[0]
        missing = tuple(g.short_name or g.full_name for g in best.grids if not g.available)
        if not allow_ballpark or not group.transformers:
            remedy = (
                "no other transformation is available"
                if allow_ballpark
                else "install them or set allow_ballpark to use a less accurate transformation"
            )
            raise TransformationUnavailable(
                f"the best transformation from {_label(src)} to {_label(dst)} ({best.name}) needs "
                f"grid file(s) that are not installed: {', '.join(missing) or 'unknown'}; {remedy}",
                field="allow_ballpark",
                extra={"grids": list(missing), "operation": best.name},
            )
    if not group.transformers:
        hint = "" if allow_ballpark else " without a ballpark approximation (set allow_ballpark to allow one)"
        raise TransformationUnavailable(
            f"no transformation from {_label(src)} to {_label(dst)}{hint}", field="target_crs"
        )
    chosen = _first_without_horizontal_ballpark(group.transformers)
    if not group.best_available and _horizontal_ballpark(chosen) and aoi is not None:
        chosen = _proj_fallback(src, dst, always_xy, aoi) or chosen
    return _thread_safe(chosen), _describe(chosen, missing, best_available=bool(group.best_available))


def _horizontal_ballpark(transformer: Transformer) -> bool:
    description = transformer.description.lower()
    return "ballpark geographic offset" in description or "ballpark geocentric" in description


def _first_without_horizontal_ballpark(transformers: list[Transformer]) -> Transformer:
    # Between compound CRSs without a known vertical transformation, PROJ ranks every candidate as of
    # unknown accuracy, and a ballpark *horizontal* offset (off by up to hundreds of metres) can come
    # first although real datum transformations follow it.
    return next((t for t in transformers if not _horizontal_ballpark(t)), transformers[0])


def _proj_fallback(src: CRS, dst: CRS, always_xy: bool, aoi: tuple[float, float, float, float]) -> Transformer | None:
    """Return the operation PROJ itself uses in the middle of ``aoi``, unless it is a ballpark one.

    When the best operations need missing grids, TransformerGroup offers only direct operations,
    often just a ballpark offset; PROJ's crs-to-crs logic also tries intermediate CRSs (e.g. NAD27 ->
    WGS 84 -> NAD83 by Helmert shifts, accurate to ~10 m; PROJ issue GH-3613).
    """
    west, south, east, north = aoi
    centre_lon = (west + (east if east >= west else east + 360.0)) / 2.0
    centre_lon = ((centre_lon + 180.0) % 360.0) - 180.0
    try:
        to_src, _ = get_transformer(CRS84, src, always_xy=always_xy, allow_ballpark=True)
        x, y = to_src.transform(centre_lon, (south + north) / 2.0, errcheck=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate = Transformer.from_crs(
                src, dst, always_xy=always_xy, allow_ballpark=True, area_of_interest=AreaOfInterest(*aoi)
            )
            candidate.transform(x, y, errcheck=True)
            used = candidate.get_last_used_operation()
    except (ProjError, TransformationUnavailable):
        return None
    return None if "ballpark" in used.description.lower() else used


def _thread_safe(transformer: Transformer) -> Transformer:
    # TransformerGroup hands out transformers that must not be shared between threads; one rebuilt
    # from its PROJ pipeline makes a PROJ object per thread. PROJ itself instantiates operations
    # from the same string, so the result is identical.
    try:
        return Transformer.from_pipeline(transformer.to_proj4())
    except ProjError:
        return transformer


def _describe(transformer: Transformer, missing: tuple[str, ...], *, best_available: bool) -> dict[str, Any]:
    try:
        pipeline = transformer.to_proj4()
    except ProjError:
        pipeline = transformer.definition
    area = transformer.area_of_use
    return {
        "pipeline": pipeline,
        "description": transformer.description,
        "accuracy_m": None if transformer.accuracy < 0 else float(transformer.accuracy),
        "ballpark": "ballpark" in transformer.description.lower(),
        "best_available": best_available,
        "grids_missing": missing,
        "area_of_use": area.name if area is not None else None,
    }


def _label(crs: CRS) -> str:
    """A short label for messages: AUTHORITY:CODE, else the definition if short, else the name."""
    label = crs_label(crs)
    if len(label) <= 80:
        return label
    return crs.srs if len(crs.srs) <= 80 else (crs.name or "custom CRS")


def _round_aoi(aoi: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # Round outwards to 0.01 degree so that nearby extents share a cache entry.
    west, south, east, north = aoi
    return (
        max(-180.0, float(np.floor(west * 100) / 100)),
        max(-90.0, float(np.floor(south * 100) / 100)),
        min(180.0, float(np.ceil(east * 100) / 100)),
        min(90.0, float(np.ceil(north * 100) / 100)),
    )


def area_of_interest(
    coords: np.ndarray, crs: CRS, *, always_xy: bool = True
) -> tuple[float, float, float, float] | None:
    """Return the lon/lat box ``(west, south, east, north)`` covering ``coords`` (None if unknown).

    Args:
        coords: ``(N, 2)`` or ``(N, 3)`` coordinates in ``crs`` (NaN z is treated as 0).
        crs: CRS of ``coords``.
        always_xy: whether ``coords`` are x/y ordered (else authority order).

    Returns:
        Degrees; ``west > east`` when the data crosses the antimeridian.
    """
    finite = coords[np.isfinite(coords[:, 0]) & np.isfinite(coords[:, 1])]
    if len(finite) == 0:
        return None
    step = max(1, len(finite) // _AOI_SAMPLE)
    extremes = np.concatenate([finite.argmin(axis=0)[:2], finite.argmax(axis=0)[:2]])
    points = np.concatenate([finite[::step], finite[extremes], finite[-1:]])
    points = np.where(np.isnan(points), 0.0, points)  # NaN z: a 2D coordinate
    try:
        transformer, _ = get_transformer(crs, CRS84, always_xy=always_xy, allow_ballpark=True)
    except (TransformationUnavailable, ProjError):
        return None  # e.g. an engineering CRS: choose without an area
    z = points[:, 2].copy() if points.shape[1] > 2 else None
    lon, lat = points[:, 0].copy(), points[:, 1].copy()
    transformer.transform(lon, lat, z, inplace=True, errcheck=False)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return None
    west, east = _lon_interval(lon[ok])
    return west, float(lat[ok].min()), east, float(lat[ok].max())


def _lon_interval(lon: np.ndarray) -> tuple[float, float]:
    """Return the shortest longitude interval covering ``lon`` (west > east if it crosses 180)."""
    values = np.unique(((lon + 180.0) % 360.0) - 180.0)
    if len(values) == 1:
        return float(values[0]), float(values[0])
    gaps = np.diff(np.append(values, values[0] + 360.0))
    widest = int(np.argmax(gaps))
    if widest == len(values) - 1:
        return float(values[0]), float(values[-1])
    return float(values[widest + 1]), float(values[widest])


def same_crs(a: CRS, b: CRS) -> bool:
    """Return whether x/y coordinates in ``a`` are already x/y coordinates in ``b``.

    True for equal CRSs and for CRSs that differ only in axis order (EPSG:4326 as PostGIS stores it,
    lon/lat, is OGC:CRS84).
    """
    return a == b or bool(a.equals(b, ignore_axis_order=True))


def bounds_area_of_interest(bounds: Sequence[float] | None, crs: CRS) -> tuple[float, float, float, float] | None:
    """Return the lon/lat area of interest of a box ``[minx, miny, maxx, maxy]`` in ``crs`` (None if unknown).

    The box (e.g. a dataset's stored extent) is densified along its edges; degrees, west > east across
    the antimeridian.
    """
    return area_of_interest(_box_outline(bounds), crs) if bounds else None


def transform_bounds(bounds: Sequence[float], transformer: Transformer, target: CRS) -> list[float] | None:
    """Return the box, in ``target``, of a box's densified outline transformed by ``transformer`` (x/y).

    For a lon/lat ``target``, ``minx > maxx`` when the box crosses the antimeridian and a pole inside the
    box extends it to that pole. None when no point of the outline can be transformed.
    """
    x, y = _box_outline(bounds).T.copy()
    transformer.transform(x, y, inplace=True, errcheck=False)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x, y = x[ok], y[ok]
    if not target.is_geographic:
        return [float(x.min()), float(y.min()), float(x.max()), float(y.max())]
    west, east = _lon_interval(x)
    south, north = float(y.min()), float(y.max())
    px, py = transformer.transform([0.0, 0.0], [90.0, -90.0], errcheck=False, direction="INVERSE")
    inside = [bounds[0] <= a <= bounds[2] and bounds[1] <= b <= bounds[3] for a, b in zip(px, py, strict=True)]
    if any(inside):
        west, east = -180.0, 180.0
        north, south = (90.0 if inside[0] else north), (-90.0 if inside[1] else south)
    return [west, south, east, north]


def _box_outline(bounds: Sequence[float], points_per_edge: int = 21) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in bounds)
    xs, ys = np.linspace(x0, x1, points_per_edge), np.linspace(y0, y1, points_per_edge)
    return np.concatenate([
        np.column_stack([xs, np.full_like(xs, y0)]), np.column_stack([xs, np.full_like(xs, y1)]),
        np.column_stack([np.full_like(ys, x0), ys]), np.column_stack([np.full_like(ys, x1), ys]),
    ])
