"""All ORM models; importing this package registers every table (Alembic relies on it)."""

from geoservice.db.models.agent import AgentEvent, AgentSession, AgentTool, AgentToolInvocation
from geoservice.db.models.chunk import AnalysisChunk, AnalysisPlan
from geoservice.db.models.dataset import Dataset, DatasetShare, SpatialData
from geoservice.db.models.task import AnalysisResult, AnalysisTask, TaskStatus
from geoservice.db.models.user import (
    ROLE_NAMES,
    Role,
    User,
    UserActivityLog,
    UserCredential,
    UserPreference,
    UserRole,
)

__all__ = [
    "ROLE_NAMES",
    "AgentEvent",
    "AgentSession",
    "AgentTool",
    "AgentToolInvocation",
    "AnalysisChunk",
    "AnalysisPlan",
    "AnalysisResult",
    "AnalysisTask",
    "Dataset",
    "DatasetShare",
    "Role",
    "SpatialData",
    "TaskStatus",
    "User",
    "UserActivityLog",
    "UserCredential",
    "UserPreference",
    "UserRole",
]
