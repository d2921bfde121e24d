"""``Annotated`` dependencies; the transaction lives here (commit on success, rollback on error)."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from geoservice import security
from geoservice.config import Settings
from geoservice.db.engine import read_only, transaction
from geoservice.queue import TaskQueue, send_after_commit
from geoservice.services import auth
from geoservice.services.access import Principal, Unauthorized


def get_settings_dep(request: Request) -> Settings:
    return cast(Settings, request.state.settings)


def get_sessionmaker(request: Request) -> sessionmaker[Session]:
    return cast(sessionmaker[Session], request.state.sessionmaker)


def get_queue(request: Request) -> TaskQueue:
    return cast(TaskQueue, request.state.queue)


#: Requests that only read: their transaction is read-only (``db.engine.read_only``).
READ_METHODS = frozenset({"GET", "HEAD"})


async def db_slot(request: Request) -> AsyncIterator[None]:
    """Wait (in the event loop, holding no thread) for one of the pool's connections to be free.

    A session is opened in one worker thread and used and closed in others; if more requests than the pool
    has connections each held a thread while waiting for one, the requests holding the connections could
    get no thread to finish on, and everything would stall until the pool's timeout. Counting requests in
    here, before any thread is taken, keeps the number of sessions within the pool.
    """
    async with request.state.db_slots:
        yield


def get_session(request: Request, _slot: Annotated[None, Depends(db_slot)]) -> Iterator[Session]:
    """Yield a session; commit when the handler succeeds, then run the after-commit hooks.

    GET and HEAD requests get a read-only transaction: a read never writes (the one exception, an API key's
    ``last_used_at``, is written in a transaction of its own: ``get_principal``).
    """
    with transaction(get_sessionmaker(request)) as session:
        if request.method in READ_METHODS:
            read_only(session)
        yield session
    # Enqueue only what the committed transaction created; a lost send is re-sent by the sweeper.
    send_after_commit(session, get_queue(request))


def _credential(request: Request) -> str | None:
    """The caller's token or API key: ``Authorization: Bearer``, ``X-API-Key``, or iServer's ``token``.

    A token in the URL (``?token=``) is accepted on the SuperMap surface only, where iServer clients put it;
    URLs end up in logs and browser histories (the logs redact it: ``geoservice.logging``).
    """
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    in_url = request.query_params.get("token") if request.url.path.startswith("/iserver/") else None
    return request.headers.get("x-api-key") or in_url or request.headers.get("token")


def get_principal(request: Request, session: Annotated[Session, Depends(get_session, scope="function")]) -> Principal:
    """Authenticate the request (JWT access token or API key); 401 otherwise."""
    credential = _credential(request)
    if not credential:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    if security.api_key_prefix(credential) is not None:
        principal = auth.principal_from_api_key(session, credential)
        if auth.api_key_use_due(principal):  # at most once a minute per key, in its own transaction
            with get_sessionmaker(request).begin() as own:
                auth.touch_api_key(own, principal)
        return principal
    try:
        claims = security.decode_access_token(get_settings_dep(request), credential)
    except security.TokenError as exc:
        raise Unauthorized(str(exc)) from exc
    if auth.access_token_denied(request.state.redis, claims.jti):
        raise Unauthorized("token revoked (logged out)")
    request.state.token_claims = claims
    return auth.principal_for_user(session, claims.user_id, scopes=claims.scopes)


def get_current_user_id(principal: Annotated[Principal, Depends(get_principal)]) -> uuid.UUID:
    return principal.user_id


def get_request_info(request: Request) -> auth.RequestInfo:
    """Client IP (only a real address: the column is ``inet``) and user agent, for the activity log."""
    host = request.client.host if request.client else None
    try:
        ip = str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        ip = None
    return auth.RequestInfo(ip, (request.headers.get("user-agent") or "")[:1000] or None)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response is sent, so a 201/202 always names a committed row.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SessionmakerDep = Annotated[sessionmaker[Session], Depends(get_sessionmaker)]
CurrentUser = Annotated[Principal, Depends(get_principal)]
CurrentUserId = Annotated[uuid.UUID, Depends(get_current_user_id)]
RequestInfoDep = Annotated[auth.RequestInfo, Depends(get_request_info)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
