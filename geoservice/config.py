"""Typed settings: the only place that reads the environment.

Flat variable names are the contract: ``GEOSERVICE_DATABASE_URL``, ``GEOSERVICE_REDIS_URL`` and so on.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-secret-change-me-before-deploying"  # 32+ bytes, as HS256 wants


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEOSERVICE_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "production"] = "dev"
    secret_key: str = DEV_SECRET

    # --- PostgreSQL / PostGIS -------------------------------------------------------------
    # 127.0.0.1, not localhost: localhost resolves to ::1 first, where trust auth is not configured.
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/geoservice"
    # Pool per process; the API runs sync handlers in a thread pool of ~40, most of them short.
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # Statement timeout for API requests (ms): a runaway query must not hold a connection forever.
    db_statement_timeout_ms: int = 120_000

    # --- Redis / Celery -------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Queue name; tests use their own so parallel runs never steal each other's tasks.
    task_queue: str = "geoservice"
    # Soft limit raises inside the task (it is marked failed with a clear reason); hard limit kills it.
    task_soft_time_limit_s: int = 1800
    task_hard_time_limit_s: int = 1900
    # Must exceed the hard limit: Redis re-delivers an unacked task after this many seconds.
    broker_visibility_timeout_s: int = 2100
    # A running task renews its lease every lease_s / 3; an expired lease means the worker is gone.
    task_lease_s: int = 60
    task_max_attempts: int = 3
    # The sweeper re-enqueues accepted tasks older than this that never started (lost enqueue).
    sweeper_interval_s: int = 30
    sweeper_accepted_grace_s: int = 60
    # Progress writes are throttled to about once per this many seconds (phase changes always write).
    progress_interval_s: float = 1.0
    # Extra analysis operations, "module:attribute" of an Operation each (comma-separated); API and
    # workers must load the same list. Used for site-specific analyses, and by the tests.
    analysis_plugins: str = ""
    # Chunked execution (issue #11): a task over stored datasets with more features or vertices than one
    # chunk holds is split into chunks that any worker runs; 0 features turns it off (one piece per task).
    # Defaults: 1M points in 20 chunks of 50,000; 100,000 polygons of ~50 vertices in 20 chunks of 5,000.
    chunk_features: int = Field(default=50_000, ge=0)
    chunk_vertices: int = Field(default=250_000, ge=1)

    # --- HTTP -----------------------------------------------------------------------------
    # Largest accepted request body or upload (bytes); larger ones get 413.
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Largest total size of files unpacked from an uploaded zip (zip-bomb guard).
    max_unpacked_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1024)
    # Default and maximum page sizes for lists and features.
    page_size_default: int = 100
    page_size_max: int = 10_000
    # Rows fetched per round trip when streaming exports.
    export_batch_size: int = 5000
    # Owner of files imported with ``geoservice import`` when no --owner is given.
    default_username: str = "geoservice"

    # --- Authentication -----------------------------------------------------------------
    jwt_issuer: str = "geoservice"
    jwt_audience: str = "geoservice-api"
    # Access tokens are short-lived JWTs; refresh tokens rotate on every use.
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # iServer tokens travel in URLs (?token=): their lifetime is capped (minutes; iServer's own default: 60).
    iserver_token_max_minutes: int = Field(default=12 * 60, ge=1, le=7 * 24 * 60)
    # Open registration lets anyone create an account (role below); otherwise only admins create users.
    registration_open: bool = False
    default_role: str = "analyst"
    # Failed logins allowed per account and per client IP within the window, then 429 + Retry-After.
    login_max_failures_per_account: int = 5
    login_max_failures_per_ip: int = 20
    login_window_s: int = 900
    # SuperMap surface (issue #5): geometry buffers honour radiusUnit (metres on the ground) instead of
    # iServer's CRS units (degrees for EPSG:4326); a request's ?honourRadiusUnit= overrides it.
    supermap_honour_radius_unit: bool = False
    # SuperMap returnContent POSTs on dataset analyses wait this long for their task, then answer 504.
    supermap_wait_s: float = Field(default=60.0, gt=0)

    # --- Agents and MCP (issue #7) ---------------------------------------------------------------
    # Analysis tool calls on at most this many input features (and this much inline GeoJSON) run at once in
    # the API process; larger ones become analysis tasks and answer with a task handle.
    agent_sync_max_features: int = 500
    agent_sync_max_inline_bytes: int = 256 * 1024
    # Results over this many bytes of GeoJSON are summarised (count, extent, geodesic totals, a simplified
    # preview of the first agent_preview_features features) with a handle to fetch the full result.
    agent_max_result_bytes: int = Field(default=32 * 1024, ge=1024)
    agent_preview_features: int = 20
    # Idempotency-Key: how long a key is remembered; how long a retry waits for a first call still running.
    agent_idempotency_ttl_s: int = 24 * 3600
    agent_idempotency_wait_s: float = 10.0
    # MCP tool calls wait up to mcp_task_wait_s for their task (polling it every mcp_poll_interval_s, sending
    # a progress notification on every change and at least every mcp_progress_heartbeat_s), then answer with
    # the task handle (task_status / task_result follow it up).
    mcp_task_wait_s: float = 900.0
    mcp_poll_interval_s: float = 0.25
    mcp_progress_heartbeat_s: float = 10.0
    # The API key `geoservice mcp` (stdio) acts with; HTTP callers send their own (X-API-Key or Bearer gs_...).
    mcp_api_key: str | None = None
    log_json: bool = False
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> Self:
        if self.env == "production" and self.secret_key == DEV_SECRET:
            raise ValueError("GEOSERVICE_SECRET_KEY must be set to a real secret when GEOSERVICE_ENV=production")
        if len(self.secret_key.encode()) < 32:
            raise ValueError("GEOSERVICE_SECRET_KEY must be at least 32 bytes (it signs HS256 tokens)")
        if self.broker_visibility_timeout_s <= self.task_hard_time_limit_s:
            raise ValueError("broker_visibility_timeout_s must exceed task_hard_time_limit_s")
        if self.task_soft_time_limit_s >= self.task_hard_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_hard_time_limit_s")
        return self

    @property
    def psycopg_dsn(self) -> str:
        """Return the database URL in libpq form (for raw psycopg connections)."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()
