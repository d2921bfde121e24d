"""``Annotated`` dependencies; the transaction lives here (commit on success, rollback on error)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from geoservice.config import Settings
from geoservice.queue import TaskQueue, send_after_commit


def get_settings_dep(request: Request) -> Settings:
    return cast(Settings, request.state.settings)


def get_sessionmaker(request: Request) -> sessionmaker[Session]:
    return cast(sessionmaker[Session], request.state.sessionmaker)


def get_queue(request: Request) -> TaskQueue:
    return cast(TaskQueue, request.state.queue)


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session; commit when the handler succeeds, then run the after-commit hooks."""
    session = get_sessionmaker(request)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    # Enqueue only what the committed transaction created; a lost send is re-sent by the sweeper.
    send_after_commit(session, get_queue(request))


def get_current_user_id(request: Request) -> uuid.UUID:
    """Return the acting user: the configured default user until authentication lands (issue #6)."""
    return cast(uuid.UUID, request.state.default_user_id)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response is sent, so a 201/202 always names a committed row.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SessionmakerDep = Annotated[sessionmaker[Session], Depends(get_sessionmaker)]
CurrentUserId = Annotated[uuid.UUID, Depends(get_current_user_id)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
