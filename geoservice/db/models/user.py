"""Users, roles, credentials (refresh tokens and API keys, stored hashed), preferences, activity logs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from geoservice.db.base import Base, CreatedAt, Timestamps, UUIDPk

ROLE_NAMES = ("admin", "analyst", "viewer", "agent")


class User(UUIDPk, Timestamps, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(50))
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    is_superuser: Mapped[bool] = mapped_column(server_default=text("false"))
    last_login: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Role(UUIDPk, Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(50), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class UserRole(UUIDPk, Base):
    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserCredential(UUIDPk, Timestamps, Base):
    """A credential other than the password: a refresh token (``provider='refresh'``) or an API key.

    Secrets are stored only as SHA-256 hashes (they are 256-bit random values, so a fast hash is safe):
    ``refresh_token`` / ``access_token`` hold hashes, never the token. ``provider_account_id`` is the
    refresh-token family id, or the API key's public prefix.
    """

    __tablename__ = "user_credentials"
    __table_args__ = (
        Index("ix_user_credentials_refresh_token", "refresh_token", unique=True,
              postgresql_where=text("refresh_token IS NOT NULL")),
        Index("ix_user_credentials_access_token", "access_token", unique=True,
              postgresql_where=text("access_token IS NOT NULL")),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(50))
    provider_account_id: Mapped[str | None] = mapped_column(String(255), index=True)
    hashed_password: Mapped[str | None] = mapped_column(Text)
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    # --- bookkeeping for refresh tokens and API keys ---
    name: Mapped[str | None] = mapped_column(String(255))
    scopes: Mapped[list[str] | None] = mapped_column(ARRAY(String(50)))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserPreference(UUIDPk, Base):
    __tablename__ = "user_preferences"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                                 onupdate=func.now())


class UserActivityLog(UUIDPk, CreatedAt, Base):
    __tablename__ = "user_activity_logs"

    # NULL for a failed login under an unknown user name (the name is in details).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(String(50), index=True)
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
