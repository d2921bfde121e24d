"""Users: the caller's profile, preferences, API keys and activity; user and role management for admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from geoservice.api.deps import CurrentUser, RequestInfoDep, SessionDep, SettingsDep
from geoservice.api.routers.auth import user_read
from geoservice.api.schemas.common import MAX_OFFSET, Page
from geoservice.api.schemas.users import (
    ActivityRead,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    PreferenceRead,
    PreferenceWrite,
    RoleAssign,
    UserCreate,
    UserRead,
    UserUpdate,
)
from geoservice.db.models import Role, User, UserActivityLog, UserCredential, UserPreference
from geoservice.errors import Conflict, NotFound
from geoservice.services import auth

router = APIRouter(tags=["users"])
PreferenceKey = Annotated[str, Path(min_length=1, max_length=100)]  # the column's length


@router.get("/users/me", response_model=UserRead)
def me(session: SessionDep, principal: CurrentUser) -> UserRead:
    return user_read(session, session.get(User, principal.user_id))


@router.get("/users/me/preferences", response_model=list[PreferenceRead])
def list_preferences(session: SessionDep, principal: CurrentUser) -> list[PreferenceRead]:
    rows = session.execute(select(UserPreference).where(UserPreference.user_id == principal.user_id)
                           .order_by(UserPreference.key)).scalars()
    return [PreferenceRead.model_validate(r) for r in rows]


def _preference(session: SessionDep, principal: CurrentUser, key: str) -> UserPreference | None:
    return session.execute(select(UserPreference).where(UserPreference.user_id == principal.user_id,
                                                        UserPreference.key == key)).scalar_one_or_none()


@router.get("/users/me/preferences/{key}", response_model=PreferenceRead)
def get_preference(key: PreferenceKey, session: SessionDep, principal: CurrentUser) -> PreferenceRead:
    pref = _preference(session, principal, key)
    if pref is None:
        raise NotFound(f"preference {key!r} not set", field="key")
    return PreferenceRead.model_validate(pref)


@router.put("/users/me/preferences/{key}", response_model=PreferenceRead)
def put_preference(key: PreferenceKey, body: PreferenceWrite, session: SessionDep,
                   principal: CurrentUser) -> PreferenceRead:
    """Set a preference such as ``default_crs``, ``units`` or ``language``."""
    pref = _preference(session, principal, key)
    if pref is None:
        pref = UserPreference(user_id=principal.user_id, key=key, value=body.value)
        session.add(pref)
    else:
        pref.value = body.value
    session.flush()
    session.refresh(pref)
    return PreferenceRead.model_validate(pref)


@router.delete("/users/me/preferences/{key}", status_code=204)
def delete_preference(key: PreferenceKey, session: SessionDep, principal: CurrentUser) -> Response:
    pref = _preference(session, principal, key)
    if pref is None:
        raise NotFound(f"preference {key!r} not set", field="key")
    session.delete(pref)
    return Response(status_code=204)


@router.post("/users/me/api-keys", status_code=201, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, session: SessionDep, principal: CurrentUser) -> ApiKeyCreated:
    """Create an API key for a program or agent; the key is shown once and stored only as a hash."""
    cred, key = auth.create_api_key(session, principal, name=body.name, roles=body.roles,
                                    expires_in_days=body.expires_in_days)
    session.refresh(cred)
    return ApiKeyCreated(**ApiKeyRead.model_validate(cred).model_dump(), key=key)


@router.get("/users/me/api-keys", response_model=list[ApiKeyRead])
def list_api_keys(session: SessionDep, principal: CurrentUser) -> list[ApiKeyRead]:
    rows = session.execute(select(UserCredential).where(UserCredential.user_id == principal.user_id,
                                                        UserCredential.provider == "api_key")
                           .order_by(UserCredential.created_at)).scalars()
    return [ApiKeyRead.model_validate(r) for r in rows]


@router.delete("/users/me/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> Response:
    auth.revoke_api_key(session, principal, key_id)
    return Response(status_code=204)


@router.get("/users/me/activity", response_model=list[ActivityRead])
def my_activity(session: SessionDep, principal: CurrentUser,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ActivityRead]:
    rows = session.execute(select(UserActivityLog).where(UserActivityLog.user_id == principal.user_id)
                           .order_by(UserActivityLog.created_at.desc()).limit(limit)).scalars()
    return [ActivityRead.model_validate(r) for r in rows]


# --- administrators ---------------------------------------------------------------------------------

@router.get("/users", response_model=Page[UserRead])
def list_users(session: SessionDep, principal: CurrentUser, settings: SettingsDep,
               limit: Annotated[int | None, Query(ge=1)] = None, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0
               ) -> Page[UserRead]:
    principal.require_admin()
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    total = session.query(User).count()
    rows = session.execute(select(User).order_by(User.username).limit(limit).offset(offset)).scalars()
    return Page[UserRead](data=[user_read(session, u) for u in rows], count=total, limit=limit, offset=offset)


@router.post("/users", status_code=201, response_model=UserRead)
def create_user(body: UserCreate, session: SessionDep, settings: SettingsDep, principal: CurrentUser,
                info: RequestInfoDep) -> UserRead:
    principal.require_admin()
    user = auth.create_user(session, username=body.username, password=body.password, email=body.email,
                            phone=body.phone, roles=body.roles if body.roles is not None else [settings.default_role])
    auth.log_activity(session, "user_created", info, principal.user_id, user_id=str(user.id))
    return user_read(session, user)


def _user(session: SessionDep, principal: CurrentUser, user_id: uuid.UUID) -> User:
    principal.require_admin()
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", field="user_id")
    return user


@router.get("/users/{user_id}", response_model=UserRead)
def get_user(user_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> UserRead:
    return user_read(session, _user(session, principal, user_id))


@router.patch("/users/{user_id}", response_model=UserRead)
def update_user(user_id: uuid.UUID, body: UserUpdate, session: SessionDep, principal: CurrentUser) -> UserRead:
    user = _user(session, principal, user_id)
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(user, field, value)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict("email: already taken", field="email") from exc
    return user_read(session, user)


@router.post("/users/{user_id}/roles", response_model=UserRead)
def add_role(user_id: uuid.UUID, body: RoleAssign, session: SessionDep, principal: CurrentUser,
             info: RequestInfoDep) -> UserRead:
    user = _user(session, principal, user_id)
    auth.assign_role(session, user.id, body.role)
    auth.log_activity(session, "role_changed", info, principal.user_id, user_id=str(user.id), added=body.role)
    return user_read(session, user)


@router.delete("/users/{user_id}/roles/{role}", response_model=UserRead)
def remove_role(user_id: uuid.UUID, role: str, session: SessionDep, principal: CurrentUser,
                info: RequestInfoDep) -> UserRead:
    user = _user(session, principal, user_id)
    if not auth.remove_role(session, user.id, role):
        raise NotFound(f"user {user_id} does not have role {role!r}", field="role")
    auth.log_activity(session, "role_changed", info, principal.user_id, user_id=str(user.id), removed=role)
    return user_read(session, user)


@router.get("/roles")
def list_roles(session: SessionDep, principal: CurrentUser) -> list[dict[str, str | None]]:
    principal.require_admin()
    return [{"name": r.name, "description": r.description}
            for r in session.execute(select(Role).order_by(Role.name)).scalars()]


@router.get("/activity", response_model=list[ActivityRead])
def all_activity(session: SessionDep, principal: CurrentUser, action: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ActivityRead]:
    principal.require_admin()
    query = select(UserActivityLog).order_by(UserActivityLog.created_at.desc()).limit(limit)
    if action:
        query = query.where(UserActivityLog.action == action)
    return [ActivityRead.model_validate(r) for r in session.execute(query).scalars()]
