"""Task engine: lease, attempts, phase, enqueue bookkeeping and the result dataset link (issue #3).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = [
    sa.Column("phase", sa.String(length=50), nullable=True),
    sa.Column("error_code", sa.String(length=100), nullable=True),
    sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
    sa.Column("lease_owner", sa.String(length=255), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result_dataset_id", sa.Uuid(), nullable=True),
]


def upgrade() -> None:
    for column in _COLUMNS:
        op.add_column("analysis_tasks", column)
    op.create_foreign_key(
        op.f("fk_analysis_tasks_result_dataset_id_datasets"),
        "analysis_tasks",
        "datasets",
        ["result_dataset_id"],
        ["id"],
        ondelete="SET NULL",
    )
    # The sweeper scans for lost enqueues and expired leases: keep that cheap.
    op.create_index(
        "ix_analysis_tasks_sweep",
        "analysis_tasks",
        ["status", "lease_expires_at"],
        postgresql_where=sa.text("status IN ('accepted','running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_analysis_tasks_sweep", table_name="analysis_tasks")
    op.drop_constraint(op.f("fk_analysis_tasks_result_dataset_id_datasets"), "analysis_tasks", type_="foreignkey")
    for column in reversed(_COLUMNS):
        op.drop_column("analysis_tasks", column.name)
