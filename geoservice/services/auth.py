"""Authentication use-cases: users, login with rate limits, token rotation, API keys, activity log."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from geoservice import security
from geoservice.config import Settings
from geoservice.db.models import ROLE_NAMES, Role, User, UserActivityLog, UserCredential, UserRole
from geoservice.errors import Conflict, GeoserviceError, InvalidInput, NotFound
from geoservice.services.access import Principal, Unauthorized, roles_of

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,150}$")


class TooManyAttempts(GeoserviceError):
    code = "TooManyAttempts"
    status_code = 429


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None
    user_agent: str | None


def log_activity(session: Session, action: str, info: RequestInfo | None, user_id: uuid.UUID | None, /,
                 **details: Any) -> None:
    """Append to ``user_activity_logs`` (in the caller's transaction).

    ``user_id`` is the actor; positional-only, so ``details`` may name a target ``user_id`` too.
    """
    session.add(UserActivityLog(user_id=user_id, action=action, ip_address=info.ip if info else None,
                                user_agent=info.user_agent if info else None, details=details))
    session.flush()


def create_user(session: Session, *, username: str, password: str, email: str | None = None,
                phone: str | None = None, roles: list[str] | None = None, is_superuser: bool = False) -> User:
    """Create an active user with an argon2id password hash and roles."""
    if not USERNAME.match(username or ""):
        raise InvalidInput("username: 3-150 characters: letters, digits, _ . @ -", field="username")
    if len(password or "") < 10:
        raise InvalidInput("password: at least 10 characters", field="password")
    user = User(username=username, email=email, phone=phone, hashed_password=security.hash_password(password),
                is_superuser=is_superuser)
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict("username or email: already taken", field="username") from exc
    for role in roles or []:
        assign_role(session, user.id, role)
    return user


def assign_role(session: Session, user_id: uuid.UUID, role: str) -> None:
    role_id = _role_id(session, role)
    session.execute(insert(UserRole).values(user_id=user_id, role_id=role_id).on_conflict_do_nothing())


def remove_role(session: Session, user_id: uuid.UUID, role: str) -> bool:
    role_id = _role_id(session, role)
    deleted = session.query(UserRole).filter_by(user_id=user_id, role_id=role_id).delete()
    return bool(deleted)


def _role_id(session: Session, role: str) -> uuid.UUID:
    role_id = session.execute(select(Role.id).where(Role.name == role)).scalar()
    if role_id is None:
        raise InvalidInput(f"role: unknown role {role!r}; roles are {list(ROLE_NAMES)}", field="role")
    return role_id


# --- login rate limits (Redis, shared by every API process) ---------------------------------------

def _keys(username: str, ip: str | None) -> list[tuple[str, str]]:
    keys = [("account", f"geoservice:login-fail:user:{username.lower()}")]
    if ip:
        keys.append(("ip", f"geoservice:login-fail:ip:{ip}"))
    return keys


def check_login_allowed(client: redis.Redis, settings: Settings, username: str, ip: str | None) -> None:
    limits = {"account": settings.login_max_failures_per_account, "ip": settings.login_max_failures_per_ip}
    for kind, key in _keys(username, ip):
        count = int(client.get(key) or 0)
        if count >= limits[kind]:
            retry = max(int(client.ttl(key)), 1)
            raise TooManyAttempts(f"too many failed logins for this {kind}; retry in {retry} s",
                                  extra={"retry_after": retry})


def record_failure(client: redis.Redis, settings: Settings, username: str, ip: str | None) -> None:
    for _kind, key in _keys(username, ip):
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, settings.login_window_s, nx=True)
        pipe.execute()


def authenticate(session: Session, client: redis.Redis, settings: Settings, username: str, password: str,
                 info: RequestInfo) -> User:
    """Check a password login (rate limited per account and per IP); log success and failure."""
    check_login_allowed(client, settings, username, info.ip)
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    ok = security.verify_password(user.hashed_password if user else None, password)
    if not ok or user is None or not user.is_active:
        record_failure(client, settings, username, info.ip)
        log_activity(session, "login_failed", info, user.id if user else None, username=username)
        session.commit()  # the log entry must stick although the request fails
        raise Unauthorized("incorrect username or password", field="password")
    client.delete(_keys(username, None)[0][1])
    if user.hashed_password and security.needs_rehash(user.hashed_password):
        user.hashed_password = security.hash_password(password)
    user.last_login = func.now()
    log_activity(session, "login", info, user.id)
    return user


# --- tokens ---------------------------------------------------------------------------------------

def issue_tokens(session: Session, settings: Settings, user_id: uuid.UUID, family: str | None = None
                 ) -> dict[str, Any]:
    """A new access token and a new refresh token (in ``family``, or a new family)."""
    access, expires = security.create_access_token(settings, user_id)
    refresh = security.new_refresh_token()
    session.add(UserCredential(user_id=user_id, provider="refresh", provider_account_id=family or uuid.uuid4().hex,
                               refresh_token=security.hash_secret(refresh),
                               expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)))
    session.flush()
    return {"access_token": access, "token_type": "bearer", "expires_in": settings.access_token_ttl_s,
            "refresh_token": refresh}


def _refresh_credential(session: Session, refresh_token: str) -> UserCredential:
    cred = session.execute(select(UserCredential).where(
        UserCredential.provider == "refresh",
        UserCredential.refresh_token == security.hash_secret(refresh_token))).scalar_one_or_none()
    if cred is None:
        raise Unauthorized("unknown refresh token", field="refresh_token")
    return cred


def revoke_family(session: Session, family: str) -> None:
    session.execute(update(UserCredential).where(UserCredential.provider == "refresh",
                                                 UserCredential.provider_account_id == family,
                                                 UserCredential.revoked_at.is_(None)).values(revoked_at=func.now()))


def refresh(session: Session, settings: Settings, refresh_token: str, info: RequestInfo) -> dict[str, Any]:
    """Rotate: the old refresh token is spent; reusing a spent one revokes its whole family."""
    cred = _refresh_credential(session, refresh_token)
    if cred.revoked_at is not None or cred.used_at is not None:
        revoke_family(session, cred.provider_account_id or "")
        log_activity(session, "refresh_reuse", info, cred.user_id, family=cred.provider_account_id)
        session.commit()  # the revocation must stick although the request fails
        raise Unauthorized("refresh token already used or revoked; all tokens of this login are revoked",
                           field="refresh_token")
    if cred.expires_at is not None and cred.expires_at < datetime.now(UTC):
        raise Unauthorized("refresh token expired", field="refresh_token")
    user = session.get(User, cred.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("user is inactive", field="refresh_token")
    cred.used_at = func.now()
    log_activity(session, "token_refresh", info, cred.user_id)
    return issue_tokens(session, settings, cred.user_id, family=cred.provider_account_id)


def logout(session: Session, refresh_token: str, info: RequestInfo, principal: Principal) -> None:
    cred = _refresh_credential(session, refresh_token)
    if cred.user_id != principal.user_id:
        raise Unauthorized("unknown refresh token", field="refresh_token")
    revoke_family(session, cred.provider_account_id or "")
    log_activity(session, "logout", info, cred.user_id)


def deny_access_token(client: redis.Redis, jti: str, expires_at: datetime) -> None:
    """Refuse an access token until it expires (logout)."""
    ttl = int((expires_at - datetime.now(UTC)).total_seconds()) + 1
    if ttl > 0:
        client.set(f"geoservice:denied-jti:{jti}", "1", ex=ttl)


def access_token_denied(client: redis.Redis, jti: str) -> bool:
    return bool(client.exists(f"geoservice:denied-jti:{jti}"))


# --- API keys -------------------------------------------------------------------------------------

def create_api_key(session: Session, principal: Principal, *, name: str, roles: list[str] | None,
                   expires_in_days: int | None) -> tuple[UserCredential, str]:
    """Create a key (returned once) scoped to ``roles`` (a subset of the user's roles; default all)."""
    own = roles_of(session, principal.user_id)
    scopes = sorted(set(roles) if roles is not None else own)
    if not set(scopes) <= own:
        raise InvalidInput(f"roles: a key can only carry roles you have ({sorted(own)})", field="roles")
    key, prefix = security.new_api_key()
    cred = UserCredential(user_id=principal.user_id, provider="api_key", provider_account_id=prefix, name=name,
                          access_token=security.hash_secret(key), scopes=scopes,
                          expires_at=(datetime.now(UTC) + timedelta(days=expires_in_days)) if expires_in_days else None)
    session.add(cred)
    session.flush()
    return cred, key


def principal_from_api_key(session: Session, key: str) -> Principal:
    """The principal of an API key (reads only; ``touch_api_key`` records its use)."""
    if security.api_key_prefix(key) is None:
        raise Unauthorized("malformed API key")
    cred = session.execute(select(UserCredential).where(
        UserCredential.provider == "api_key", UserCredential.access_token == security.hash_secret(key))
    ).scalar_one_or_none()
    if cred is None or cred.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    if cred.expires_at is not None and cred.expires_at < datetime.now(UTC):
        raise Unauthorized("API key expired")
    user = session.get(User, cred.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("user is inactive")
    roles = roles_of(session, user.id) & frozenset(cred.scopes or [])
    return Principal(user.id, user.username, roles, user.is_superuser and "admin" in roles, via="api_key",
                     api_key=(cred.id, cred.last_used_at))


#: ``last_used_at`` of an API key is written at most this often (it is the one write a read request makes).
API_KEY_USE_RESOLUTION_S = 60


def api_key_use_due(principal: Principal) -> bool:
    """Whether the key's ``last_used_at`` is older than the resolution (so this use should be recorded)."""
    if principal.api_key is None:
        return False
    last = principal.api_key[1]
    return last is None or (datetime.now(UTC) - last).total_seconds() >= API_KEY_USE_RESOLUTION_S


def touch_api_key(session: Session, principal: Principal) -> None:
    """Record the key's use (a compare-and-set, so concurrent requests write it once per resolution)."""
    if principal.api_key is None:
        return
    session.execute(update(UserCredential).where(
        UserCredential.id == principal.api_key[0],
        (UserCredential.last_used_at.is_(None)) | (UserCredential.last_used_at < func.now() - timedelta(
            seconds=API_KEY_USE_RESOLUTION_S))).values(last_used_at=func.now()))


_PRINCIPAL = text("""
SELECT u.username, u.is_active, u.is_superuser,
       coalesce(array_agg(r.name) FILTER (WHERE r.name IS NOT NULL), '{}') AS roles
  FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON r.id = ur.role_id
 WHERE u.id = :id GROUP BY u.id
""")


def principal_for_user(session: Session, user_id: uuid.UUID, via: str = "token",
                       scopes: tuple[str, ...] | None = None) -> Principal:
    """The principal of an active user, with their roles (one query: every request authenticates)."""
    row = session.execute(_PRINCIPAL, {"id": user_id}).one_or_none()
    if row is None or not row.is_active:
        raise Unauthorized("user is inactive or unknown")
    roles = frozenset(row.roles)
    superuser = row.is_superuser
    if scopes is not None:  # narrowed below admin: no superuser powers either (as for API keys)
        roles = roles & frozenset(scopes)
        superuser = superuser and "admin" in roles
    return Principal(user_id, row.username, roles, superuser, via=via)


def revoke_api_key(session: Session, principal: Principal, key_id: uuid.UUID) -> None:
    cred = session.get(UserCredential, key_id)
    if cred is None or cred.provider != "api_key" or not (cred.user_id == principal.user_id or principal.is_admin):
        raise NotFound(f"API key {key_id} not found", field="key_id")
    cred.revoked_at = func.now()
    session.flush()
