"""Authentication routes: register, OAuth2 password login, refresh rotation, logout; iServer tokens."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from geoservice import security
from geoservice.api.deps import CurrentUser, RequestInfoDep, SessionDep, SettingsDep, get_principal
from geoservice.api.schemas.users import RefreshRequest, TokenPair, UserCreate, UserRead
from geoservice.api.supermap_http import SupermapRoute
from geoservice.errors import BadRequest, InvalidInput
from geoservice.services import auth
from geoservice.services.access import Forbidden, Principal, roles_of

router = APIRouter(prefix="/auth", tags=["auth"])
# Under /iserver every error is iServer's body ({"succeed": false, "error": {code, errorMsg}}), as on the rest
# of the SuperMap surface: iServer clients read only the body.
iserver_router = APIRouter(tags=["supermap"], route_class=SupermapRoute)


def optional_principal(request: Request, session: SessionDep) -> Principal | None:
    has_credential = request.headers.get("authorization") or request.headers.get("x-api-key")
    return get_principal(request, session) if has_credential else None


def user_read(session: Any, user: Any) -> UserRead:
    return UserRead.model_validate(user).model_copy(update={"roles": sorted(roles_of(session, user.id))})


@router.post("/register", status_code=201, response_model=UserRead)
def register(body: UserCreate, session: SessionDep, settings: SettingsDep, info: RequestInfoDep,
             principal: Annotated[Principal | None, Depends(optional_principal)]) -> UserRead:
    """Create an account: open to anyone when registration is open, otherwise admins only.

    Only admins choose roles; self-registered users get the configured default role.
    """
    is_admin = principal is not None and principal.is_admin
    if not settings.registration_open and not is_admin:
        raise Forbidden("registration is closed; ask an administrator to create your account")
    if body.roles is not None and not is_admin:
        raise Forbidden("only administrators choose roles", field="roles")
    roles = body.roles if body.roles is not None else [settings.default_role]
    user = auth.create_user(session, username=body.username, password=body.password, email=body.email,
                            phone=body.phone, roles=roles, is_superuser=False)
    auth.log_activity(session, "user_registered", info, user.id, by=str(principal.user_id) if principal else None)
    return user_read(session, user)


@router.post("/token", response_model=TokenPair)
def login(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep,
          settings: SettingsDep, info: RequestInfoDep) -> TokenPair:
    """OAuth2 password flow: a short-lived JWT access token and a rotating refresh token."""
    user = auth.authenticate(session, request.state.redis, settings, form.username, form.password, info)
    return TokenPair(**auth.issue_tokens(session, settings, user.id))


@router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep, info: RequestInfoDep) -> TokenPair:
    """Exchange a refresh token for a new pair; the old one is spent (reuse revokes the whole login)."""
    return TokenPair(**auth.refresh(session, settings, body.refresh_token, info))


@router.post("/logout", status_code=204)
def logout(request: Request, body: RefreshRequest, session: SessionDep, principal: CurrentUser,
           info: RequestInfoDep) -> Response:
    """Revoke this login's refresh tokens and the access token used for this call."""
    auth.logout(session, body.refresh_token, info, principal)
    claims = getattr(request.state, "token_claims", None)
    if claims is not None:
        auth.deny_access_token(request.state.redis, claims.jti, claims.expires_at)
    return Response(status_code=204)


@iserver_router.post("/iserver/services/security/tokens.json")
@iserver_router.post("/iserver/services/security/tokens")
async def iserver_token(request: Request, session: SessionDep, settings: SettingsDep, info: RequestInfoDep
                        ) -> Response:
    """iServer's token service: ``{userName, password, expiration (minutes)}`` -> the token as text.

    The token is one of our access tokens; send it as ``?token=`` or a ``token`` header.
    """
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body: expected JSON {userName, password, expiration}", field="body") from exc
    if not isinstance(body, dict) or not body.get("userName") or not body.get("password"):
        raise InvalidInput("userName and password are required", field="userName")
    minutes = body.get("expiration")
    longest = settings.iserver_token_max_minutes
    if minutes is None:
        minutes = min(60, longest)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 1 <= minutes <= longest:
        raise InvalidInput(f"expiration: minutes between 1 and {longest} (GEOSERVICE_ISERVER_TOKEN_MAX_MINUTES)",
                           field="expiration")
    user = auth.authenticate(session, request.state.redis, settings, str(body["userName"]), str(body["password"]),
                             info)
    token, _ = security.create_access_token(settings, user.id, ttl_s=int(minutes * 60))
    return Response(token, media_type="text/plain")
