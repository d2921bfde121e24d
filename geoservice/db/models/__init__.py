"""All ORM models; importing this package registers every table (Alembic relies on it)."""

from geoservice.db.models.dataset import Dataset, SpatialData
from geoservice.db.models.task import AnalysisResult, AnalysisTask, TaskStatus
from geoservice.db.models.user import User

__all__ = ["AnalysisResult", "AnalysisTask", "Dataset", "SpatialData", "TaskStatus", "User"]
