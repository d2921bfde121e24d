"""Datasets and their features (``spatial_data``), stored in each dataset's native SRID.

``spatial_data.geometry`` is an untyped PostGIS geometry column, partitioned by dataset. The dataset's
SRID is enforced declaratively on its partition: ``CHECK (ST_SRID(geometry) = <the dataset's srid>)``
refuses a feature in any other SRID (``spatial_data.srid`` is generated from ``ST_SRID(geometry)``).
So a NAD27 or state-plane dataset is stored exactly as imported and never silently moved.
"""

from __future__ import annotations

import uuid
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geoservice.db.base import Base, CreatedAt, Timestamps, UUIDPk


class Dataset(UUIDPk, Timestamps, Base):
    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        # Target of spatial_data's composite foreign key (the per-dataset SRID check).
        UniqueConstraint("id", "srid"),
    )

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    srid: Mapped[int] = mapped_column(Integer)
    # Authority label ("EPSG:2263") or WKT for CRSs without one.
    crs: Mapped[str] = mapped_column(Text)
    geometry_type: Mapped[str] = mapped_column(String(50))
    feature_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Coordinates in all features (None for datasets stored before it was recorded): sizes chunk plans.
    vertex_count: Mapped[int | None] = mapped_column(BigInteger)
    # [minx, miny, maxx, maxy] in the native CRS, and in CRS84 (for listing and bbox queries).
    extent: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    extent_crs84: Mapped[list[float] | None] = mapped_column(ARRAY(Float))
    # Ordered attribute schema: [{"name": ..., "type": "int"|"float"|"str"|"bool"|"date"|"datetime"|"json"}].
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # How it was made: {"format": "gpkg", "filename": ..., "layer": ...} or {"task_id": ...}.
    source: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Readable (never writable) by every authenticated user.
    is_public: Mapped[bool] = mapped_column(server_default=text("false"))


class DatasetShare(CreatedAt, Base):
    """Read access to a dataset for a named user."""

    __tablename__ = "dataset_shares"

    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                               index=True)


class SpatialData(UUIDPk, Timestamps, Base):
    """One feature. The table is partitioned by dataset (``LIST (dataset_id)``), one partition per dataset,
    created and attached by ``gis_io.copy_features`` (migration 0006 says why)."""

    __tablename__ = "spatial_data"
    __table_args__ = (
        UniqueConstraint("dataset_id", "fid"),
        Index("ix_spatial_data_geometry", "geometry", postgresql_using="gist"),
        {"postgresql_partition_by": "LIST (dataset_id)"},
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    fid: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(Text)
    # GeoJSON geometry type of this feature ("Polygon", "MultiPolygon", ...).
    data_type: Mapped[str] = mapped_column(String(50))
    geometry: Mapped[Any] = mapped_column(
        Geometry(geometry_type="GEOMETRY", srid=-1, spatial_index=False), nullable=False
    )
    srid: Mapped[int] = mapped_column(Integer, Computed("ST_SRID(geometry)", persisted=True))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    crs: Mapped[str] = mapped_column(Text)
