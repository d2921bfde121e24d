"""Record each task's queue, so a sweeper re-sends only its own queue's tasks.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("analysis_tasks", sa.Column("queue", sa.String(length=100), server_default=sa.text(
        "'geoservice'"), nullable=False))


def downgrade() -> None:
    op.drop_column("analysis_tasks", "queue")
