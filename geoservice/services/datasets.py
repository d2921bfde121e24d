"""Dataset use-cases: import a layer, store an analysis output, read features in any CRS."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from pyproj import CRS
from sqlalchemy import select
from sqlalchemy.orm import Session

from geoservice.analysis.crs import bounds_area_of_interest, get_transformer, parse_crs, same_crs, transform_bounds
from geoservice.analysis.errors import EmptyInput, TransformationUnavailable
from geoservice.analysis.reproject import Reprojection, plan_reprojection, reproject_layer
from geoservice.analysis.validation import geometry_family, validate_geometries
from geoservice.db import gis_io
from geoservice.db.models import Dataset, DatasetShare, User
from geoservice.db.repositories import datasets as repo
from geoservice.errors import Conflict, InvalidInput, NotFound
from geoservice.services.access import Forbidden, Principal, can_change, can_read_dataset

CRS84 = CRS.from_user_input("OGC:CRS84")

#: What a refused read tells the caller to do (a task's message says to set allow_ballpark instead).
READ_REMEDY = ("this read asked for the most accurate transformation only (allow_ballpark=false): drop it to use "
               "the best available one, which the response names, or use crs=native (bbox-crs=native for a bbox) "
               "to work in the stored coordinates")


@dataclass
class StoredLayer:
    dataset: Dataset
    repaired: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_name(session: Session, owner_id: uuid.UUID, name: Any) -> str:
    """Validate a dataset name and that the owner has no dataset of that name yet."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name: a non-empty dataset name is required", field="name")
    name = name.strip()
    if len(name) > 255:
        raise InvalidInput("name: at most 255 characters", field="name")
    if repo.get_by_name(session, owner_id, name) is not None:
        raise Conflict(f"name: a dataset named {name!r} already exists", field="name")
    return name


def store_layer(
    session: Session,
    owner_id: uuid.UUID,
    name: str,
    gdf: GeoDataFrame,
    *,
    source: dict[str, Any],
    make_valid: bool = False,
    description: str | None = None,
    analysis_output: bool = False,
) -> StoredLayer:
    """Validate ``gdf`` and store it as a new dataset in its own CRS (flushes; the caller commits).

    An ``analysis_output`` may be empty (an overlay without overlap) or mix geometry families (when the
    analysis was asked to keep them); invalid output geometries are repaired and reported.
    """
    name = check_name(session, owner_id, name)
    if len(gdf) == 0 and not analysis_output:
        raise EmptyInput("features: the layer has no features", field="features")
    if gdf.crs is None:
        raise InvalidInput("crs: the layer has no CRS", field="crs")
    gdf, fids = _feature_ids(gdf.reset_index(drop=True))
    gdf, repaired = validate_geometries(gdf, make_valid=make_valid or analysis_output, allow_mixed=analysis_output)
    crs = CRS.from_user_input(gdf.crs)
    srid, label = repo.resolve_srid(session, crs)
    bounds = [float(v) for v in shapely.total_bounds(np.asarray(gdf.geometry.array))] if len(gdf) else None
    dataset = repo.add(
        session,
        name=name,
        description=description,
        owner_id=owner_id,
        srid=srid,
        crs=label,
        geometry_type=geometry_family(gdf, allow_mixed=analysis_output),
        feature_count=len(gdf),
        vertex_count=int(shapely.get_num_coordinates(np.asarray(gdf.geometry.array, dtype=object)).sum()),
        extent=bounds,
        extent_crs84=bounds_crs84(crs, bounds),
        fields=infer_fields(gdf),
        source=source,
    )
    gis_io.copy_features(session, dataset.id, gdf, srid=srid, crs_label=label, fids=fids)
    return StoredLayer(dataset, repaired)


def _feature_ids(gdf: GeoDataFrame) -> tuple[GeoDataFrame, np.ndarray | None]:
    """Use an integer ``fid`` column (unique, positive) as the feature ids, as GDAL does.

    Our own Shapefile and FlatGeobuf exports carry the ids in ``fid`` (FlatGeobuf may store features in
    spatial order), so a re-import restores the same ids, order and attributes.
    """
    if "fid" not in gdf.columns or not pd.api.types.is_integer_dtype(gdf["fid"]) or gdf["fid"].isna().any():
        return gdf, None
    fids = gdf["fid"].to_numpy(dtype=np.int64)
    if len(np.unique(fids)) != len(fids) or fids.min() < 1 or fids.max() > 2**31 - 1:
        return gdf, None
    order = np.argsort(fids, kind="stable")
    return gdf.drop(columns="fid").iloc[order].reset_index(drop=True), fids[order]


def bounds_crs84(crs: CRS, bounds: list[float] | None) -> list[float] | None:
    """The lon/lat box of ``bounds`` (in ``crs``), for display only: a ballpark operation is good enough."""
    if bounds is None or same_crs(crs, CRS84):
        return bounds
    aoi = bounds_area_of_interest(bounds, crs)
    try:
        transformer, _ = get_transformer(crs, CRS84, always_xy=True, allow_ballpark=True, area_of_interest=aoi)
    except TransformationUnavailable:  # e.g. an engineering CRS: no link to the Earth
        return None
    return transform_bounds(bounds, transformer, CRS84)


def infer_fields(gdf: GeoDataFrame, unknown: str | None = "str") -> list[dict[str, str | None]]:
    """Describe the attribute columns in order, so exports can restore their types.

    ``unknown`` (given): the type of a column that holds no value at all (a chunk of a larger output says None,
    so that the chunks' types add up to what the whole output's would be).
    """
    out: list[dict[str, str | None]] = []
    for column in gdf.columns:
        if column == gdf.geometry.name:
            continue
        kind: str | None = _field_type(gdf[column])
        if unknown != "str" and not gdf[column].notna().any():
            kind = unknown
        out.append({"name": str(column), "type": kind})
    return out


def _field_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    values = [v for v in series.to_numpy(dtype=object) if v is not None and v is not pd.NaT and v == v]
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if values and all(isinstance(v, float | int) and not isinstance(v, bool) for v in values):
        return "float"
    if values and all(isinstance(v, datetime) for v in values):
        return "datetime"
    if values and all(isinstance(v, date) for v in values):
        return "date"
    if any(isinstance(v, dict | list) for v in values):
        return "json"
    return "str"


def get_dataset(session: Session, dataset_id: uuid.UUID, principal: Principal, *, write: bool = False) -> Dataset:
    """Return a dataset the principal may read (or change, with ``write``).

    Datasets the caller may not see are not found (404), so ids do not leak; a visible dataset the
    caller may not change (shared or public) is forbidden (403).
    """
    dataset = repo.get(session, dataset_id)
    if dataset is None or not can_read_dataset(session, dataset, principal):
        raise NotFound(f"dataset {dataset_id} not found", field="dataset_id")
    if write and not can_change(dataset.owner_id, principal):
        raise Forbidden(f"dataset {dataset_id} is shared with you read-only", field="dataset_id")
    return dataset


def dataset_crs(dataset: Dataset) -> CRS:
    """Return the dataset's CRS object."""
    return _crs_from_label(dataset.crs)


def dataset_crs_of(label: str) -> CRS:
    """Return the CRS object of a stored CRS label (``EPSG:4326``, or WKT)."""
    return _crs_from_label(label)


@lru_cache(maxsize=256)
def _crs_from_label(label: str) -> CRS:
    return CRS.from_user_input(label)


def output_crs(dataset: Dataset, requested: str | None) -> CRS:
    """Return the CRS to answer in: CRS84 by default (RFC 7946), ``native``, or any parseable CRS."""
    if requested is None:
        return CRS84
    if requested == "native":
        return dataset_crs(dataset)
    return parse_crs(requested, field="crs")


def extent_area_of_interest(dataset: Dataset) -> tuple[float, float, float, float] | None:
    """The lon/lat area of interest (degrees) of the dataset's stored extent, None when it has none."""
    return bounds_area_of_interest(dataset.extent, dataset_crs(dataset))


def reprojection(source: CRS, target: CRS, *, allow_ballpark: bool,
                 area_of_interest: tuple[float, float, float, float] | None) -> Reprojection:
    """Choose the transformation of a read as a ``reproject`` task would (x/y on both sides).

    Raises:
        TransformationUnavailable: the best operation needs a missing grid and ``allow_ballpark`` is
            false (422, naming the grid and what to pass instead).
    """
    try:
        return plan_reprojection(source, target, allow_ballpark=allow_ballpark, area_of_interest=area_of_interest)
    except TransformationUnavailable as exc:
        raise _read_refusal(exc) from None


def read_reprojection(dataset: Dataset, target: CRS, *, allow_ballpark: bool) -> Reprojection:
    """Choose once, from the dataset's stored extent, the transformation a read or export applies."""
    native = dataset_crs(dataset)
    if same_crs(native, target):
        return Reprojection(native, target)
    return reprojection(native, target, allow_ballpark=allow_ballpark,
                        area_of_interest=extent_area_of_interest(dataset))


def _read_refusal(exc: TransformationUnavailable) -> TransformationUnavailable:
    """The task's error, with the remedy a reader has (query parameters instead of task parameters)."""
    base, _, remedy = exc.detail.rpartition("; ")
    if exc.extra.get("grids") and remedy.startswith("install them"):  # a grid is missing, no ballpark asked
        return TransformationUnavailable(f"{base}; {READ_REMEDY}", field="allow_ballpark", extra=exc.extra)
    field = "crs" if exc.field == "target_crs" else exc.field
    return TransformationUnavailable(f"{exc.detail}; use crs=native to read the stored coordinates", field=field,
                                     extra=exc.extra)


def to_crs(gdf: GeoDataFrame, target: CRS, *, allow_ballpark: bool = False,
           plan: Reprojection | None = None) -> GeoDataFrame:
    """Reproject x/y ``gdf`` with the pinned choice (``plan``, else one for the area it covers).

    An exact no-op when the CRS is unchanged (EPSG:4326 as stored by PostGIS is OGC:CRS84).

    Raises:
        TransformationUnavailable: see ``reprojection``.
    """
    try:
        return reproject_layer(gdf, target, allow_ballpark=allow_ballpark, plan=plan)[0]
    except TransformationUnavailable as exc:
        raise _read_refusal(exc) from None


def shared_with(session: Session, dataset: Dataset) -> list[User]:
    """Users the dataset is shared with."""
    return list(session.execute(select(User).join(DatasetShare, DatasetShare.user_id == User.id)
                                .where(DatasetShare.dataset_id == dataset.id).order_by(User.username)).scalars())


def share(session: Session, dataset: Dataset, username: str) -> User:
    """Give ``username`` read access to ``dataset``."""
    user = session.execute(select(User).where(User.username == username, User.is_active.is_(True))).scalar()
    if user is None:
        raise InvalidInput(f"username: no active user {username!r}", field="username")
    if user.id != dataset.owner_id and session.get(DatasetShare, (dataset.id, user.id)) is None:
        session.add(DatasetShare(dataset_id=dataset.id, user_id=user.id))
        session.flush()
    return user


def unshare(session: Session, dataset: Dataset, user_id: uuid.UUID) -> None:
    share_row = session.get(DatasetShare, (dataset.id, user_id))
    if share_row is None:
        raise NotFound(f"dataset {dataset.id} is not shared with user {user_id}", field="user_id")
    session.delete(share_row)
    session.flush()
