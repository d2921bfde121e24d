"""User queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from geoservice.db.models import User


def get_or_create(session: Session, username: str) -> User:
    """Return the user called ``username``, creating it if missing (safe under concurrency)."""
    session.execute(insert(User).values(username=username).on_conflict_do_nothing(index_elements=["username"]))
    return session.execute(select(User).where(User.username == username)).scalar_one()
