"""Migrations are the only schema source: they build everything, and the models match them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_models_match_migrations(database_url: str) -> None:
    out = subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={database_url}", "check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No new upgrade operations detected" in out.stdout + out.stderr


def test_schema_has_every_column(pg) -> None:
    expected = {
        "spatial_data": {"id", "name", "data_type", "geometry", "attributes", "crs", "created_at", "updated_at",
                         "dataset_id", "fid"},
        "analysis_tasks": {"id", "name", "description", "analysis_type", "parameters", "status", "created_by",
                           "created_at", "updated_at", "started_at", "completed_at", "progress", "supermap_request",
                           "supermap_result", "error_message"},
        "analysis_results": {"id", "task_id", "result_type", "data", "result_metadata", "created_at"},
        "users": {"id", "username", "email", "phone", "hashed_password", "is_active", "is_superuser", "created_at",
                  "updated_at", "last_login"},
        "datasets": {"id", "name", "owner_id", "srid", "geometry_type", "feature_count", "extent", "created_at",
                     "updated_at"},
    }
    for table, columns in expected.items():
        rows = pg.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                          (table,)).fetchall()
        assert columns <= {r[0] for r in rows}, table
    assert pg.execute("SELECT extname FROM pg_extension WHERE extname='postgis'").fetchone()
