"""User, auth, API key, preference and activity schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=3, max_length=150)
    password: str = Field(min_length=10, max_length=1024)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)
    roles: list[str] | None = Field(default=None, description="admins only; default: the configured role")


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str | None
    phone: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    last_login: datetime | None
    roles: list[str] = []


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_active: bool | None = None
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=50)

    @field_validator("is_active")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool:
        if value is None:  # only an explicit null gets here (defaults are not validated)
            raise ValueError("true or false, not null")
        return value


class RoleAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    roles: list[str] | None = Field(default=None, description="subset of your roles; default all of them")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyRead(BaseModel):
    # By name too: ApiKeyCreated is built from a dumped ApiKeyRead (``prefix``, ``roles``).
    model_config = ConfigDict(from_attributes=True, validate_by_name=True)

    id: uuid.UUID
    name: str | None
    prefix: str = Field(validation_alias="provider_account_id")
    roles: list[str] = Field(default=[], validation_alias="scopes")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="shown only now; store it safely")


class PreferenceWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str | None = Field(max_length=10_000)


class PreferenceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key: str
    value: str | None
    updated_at: datetime


class ActivityRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID | None
    action: str
    ip_address: Any
    user_agent: str | None
    details: dict[str, Any]
    created_at: datetime
