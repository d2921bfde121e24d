"""Who may see and change what. Application checks first; PostgreSQL row-level security is not used yet.

Rules: owners see and change their own objects; a dataset can also be read by users it is shared
with, or by everyone when public; admins see and change everything. Objects a caller may not see
are reported as not found (404), never as forbidden, so ids do not leak.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.orm import Session

from geoservice.db.models import Dataset, DatasetShare, Role, UserRole
from geoservice.errors import Forbidden, Unauthorized

__all__ = ["Forbidden", "Principal", "Unauthorized", "can_change", "can_read_dataset", "dataset_visible", "roles_of"]


@dataclass(frozen=True)
class Principal:
    """The caller: a user with the roles in force for this request (an API key may narrow them)."""

    user_id: uuid.UUID
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)
    is_superuser: bool = False
    via: str = "token"  # "token" | "api_key" | "iserver_token" | "internal"
    #: With ``via="api_key"``: the key's credential id and when it was last used (as read at authentication).
    api_key: tuple[uuid.UUID, datetime | None] | None = field(default=None, compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.is_superuser or "admin" in self.roles

    @property
    def can_write(self) -> bool:
        """Create datasets and submit tasks (analysts, agents, admins; not viewers)."""
        return self.is_admin or bool(self.roles & {"analyst", "agent"})

    def require_write(self, what: str) -> None:
        if not self.can_write:
            raise Forbidden(f"your roles ({', '.join(sorted(self.roles)) or 'none'}) cannot {what}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this route is for administrators")


def roles_of(session: Session, user_id: uuid.UUID) -> frozenset[str]:
    rows = session.execute(select(Role.name).join(UserRole, UserRole.role_id == Role.id)
                           .where(UserRole.user_id == user_id)).scalars()
    return frozenset(rows)


def dataset_visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: datasets the principal may read."""
    if principal.is_admin:
        return true()
    shared = exists().where(DatasetShare.dataset_id == Dataset.id, DatasetShare.user_id == principal.user_id)
    return or_(Dataset.owner_id == principal.user_id, Dataset.is_public.is_(True), shared)


def can_read_dataset(session: Session, dataset: Dataset, principal: Principal) -> bool:
    if principal.is_admin or dataset.owner_id == principal.user_id or dataset.is_public:
        return True
    return session.get(DatasetShare, (dataset.id, principal.user_id)) is not None


def can_change(owner_id: uuid.UUID, principal: Principal) -> bool:
    return principal.is_admin or owner_id == principal.user_id
