"""Dataset queries, and the mapping from a CRS to the SRID its geometries are stored under."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from pyproj import CRS
from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session

from geoservice.db.models import Dataset
from geoservice.errors import ServiceUnavailable

# Custom CRSs (no EPSG/ESRI code PostGIS knows) get SRIDs from here up, registered in spatial_ref_sys.
CUSTOM_SRID_BASE = 910000


def resolve_srid(session: Session, crs: CRS) -> tuple[int, str]:
    """Return the PostGIS SRID for ``crs`` and its label (``AUTH:CODE``, or WKT for a custom CRS).

    A CRS PostGIS does not know is registered in ``spatial_ref_sys`` under a custom SRID.
    """
    authority = _authority(crs)
    if authority is not None:
        name, code = authority
        if (name, code) == ("OGC", "CRS84"):
            return 4326, "OGC:CRS84"  # lon/lat WGS 84: what SRID 4326 stores in PostGIS anyway
        srid = session.execute(
            text("SELECT srid FROM spatial_ref_sys WHERE upper(auth_name) = :a AND auth_srid = :c"),
            {"a": name.upper(), "c": int(code) if code.isdigit() else -1},
        ).scalar()
        if srid is not None:
            return int(srid), f"{name}:{code}"
    return _register_custom(session, crs), crs.to_wkt()


def _authority(crs: CRS) -> tuple[str, str] | None:
    """Return the (authority, code) of ``crs``, accepting a lower-confidence match (e.g. the ESRI WKT of a
    Shapefile .prj) only when that code's CRS is the same CRS."""
    exact = crs.to_authority(min_confidence=100)
    if exact is not None:
        return exact
    guess = crs.to_authority(min_confidence=70)
    if guess is not None and CRS.from_authority(*guess).equals(crs, ignore_axis_order=True):
        return guess
    return None


def _register_custom(session: Session, crs: CRS) -> int:
    wkt = crs.to_wkt()
    # Serialise registrations so two imports never take the same SRID.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('geoservice.custom_srid'))"))
    existing = session.execute(
        text("SELECT srid FROM spatial_ref_sys WHERE auth_name = 'geoservice' AND srtext = :w"), {"w": wkt}
    ).scalar()
    if existing is not None:
        return int(existing)
    srid = session.execute(
        text("SELECT greatest(coalesce(max(srid), 0) + 1, :base) FROM spatial_ref_sys WHERE srid >= :base"),
        {"base": CUSTOM_SRID_BASE},
    ).scalar_one()
    session.execute(
        text(
            "INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
            "VALUES (:s, 'geoservice', :s, :w, :p)"
        ),
        {"s": srid, "w": wkt, "p": crs.to_proj4() or ""},
    )
    return int(srid)


def get(session: Session, dataset_id: uuid.UUID) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_by_name(session: Session, owner_id: uuid.UUID, name: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name)
    ).scalar_one_or_none()


def list_page(session: Session, visible: ColumnElement[bool], *, limit: int, offset: int
              ) -> tuple[Sequence[Dataset], int]:
    """Return one page of the datasets matching ``visible`` (newest first) and the total count."""
    base = select(Dataset).where(visible)
    total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = session.execute(base.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset))
    return rows.scalars().all(), int(total)


def set_vertex_count(session: Session, dataset_id: uuid.UUID, count: int) -> None:
    session.execute(text("UPDATE datasets SET vertex_count = :n WHERE id = :id"), {"id": dataset_id, "n": count})


def add(session: Session, **values: Any) -> Dataset:
    dataset = Dataset(**values)
    session.add(dataset)
    session.flush()
    return dataset


def delete(session: Session, dataset: Dataset) -> None:
    """Delete a dataset: drop its features' partition, then the row (shares cascade)."""
    from geoservice.db.gis_io import drop_features

    try:
        drop_features(session, dataset.id)
    except psycopg.errors.LockNotAvailable as exc:
        raise ServiceUnavailable("the dataset is being read (an export?); retry the delete shortly",
                                 field="dataset_id") from exc
    session.delete(dataset)
    session.flush()
