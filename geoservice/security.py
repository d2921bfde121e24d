"""Password hashing, JWT access tokens, opaque refresh tokens and API keys (pure: no DB, no HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from geoservice.config import Settings

# argon2id, RFC 9106 "low memory" profile: 64 MiB, t=3, p=4 -- above OWASP's 19 MiB / t=2 minimum.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID)
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
API_KEY_PREFIX = "gs_"
ALGORITHM = "HS256"


class TokenError(Exception):
    """An access token that is missing, malformed, expired, or not ours."""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(hashed: str | None, password: str) -> bool:
    """Check ``password`` against an argon2 hash in constant time (also when there is no user)."""
    try:
        return _HASHER.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    return _HASHER.check_needs_rehash(hashed)


def hash_secret(secret: str) -> str:
    """SHA-256 of a high-entropy random secret (refresh token, API key): what the database stores."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    jti: str
    expires_at: datetime
    scopes: tuple[str, ...] | None


def create_access_token(settings: Settings, user_id: uuid.UUID, *, ttl_s: int | None = None,
                        scopes: list[str] | None = None) -> tuple[str, datetime]:
    """Return a signed short-lived JWT (HS256) with ``sub``, ``iss``, ``aud``, ``exp``, ``iat``, ``jti``."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s or settings.access_token_ttl_s)
    claims: dict[str, Any] = {"sub": str(user_id), "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
                              "iat": now, "nbf": now, "exp": expires, "jti": secrets.token_hex(16), "typ": "access"}
    if scopes is not None:
        claims["scopes"] = scopes
    return jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM), expires


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """Verify signature, algorithm (HS256 only: no ``none``, no key confusion), ``exp``, ``iss`` and ``aud``."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm {header.get('alg')!r} is not accepted")
        claims = jwt.decode(token, settings.secret_key, algorithms=[ALGORITHM], audience=settings.jwt_audience,
                            issuer=settings.jwt_issuer, options={"require": ["exp", "iss", "aud", "sub", "jti"]})
        if claims.get("typ") != "access":
            raise TokenError("not an access token")
        scopes = claims.get("scopes")
        return AccessClaims(uuid.UUID(claims["sub"]), claims["jti"], datetime.fromtimestamp(claims["exp"], UTC),
                            tuple(scopes) if isinstance(scopes, list) else None)
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
        raise TokenError(f"invalid token: {exc}") from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """Return ``(key, public_prefix)``; the key is shown once, the database keeps its hash and prefix."""
    prefix = secrets.token_hex(4)
    return f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def api_key_prefix(key: str) -> str | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, _, rest = key[len(API_KEY_PREFIX):].partition("_")
    return prefix if len(prefix) == 8 and rest else None


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
