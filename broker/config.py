"""Settings, read from the environment when a server is built (never at import)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every knob of the broker; env names follow the reference where the meaning matches."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Empty = the embedded default (DESIGN decision 9): a managed redis-server child
    # when the binary exists, else in-process fakeredis.
    redis_url: str = Field("", alias="REDIS_URL")
    # Isolates tenants and tests that share one Redis.
    redis_key_prefix: str = Field("am", alias="REDIS_KEY_PREFIX")
    # Connections per process; concurrent calls queue for one rather than each opening its own.
    redis_max_connections: int = Field(32, alias="REDIS_MAX_CONNECTIONS", ge=1)
    storage_root: Path = Field(Path("~/.agent-broker"), alias="STORAGE_ROOT")
    database_path: Path | None = Field(None, alias="DATABASE_PATH")
    http_host: str = Field("127.0.0.1", alias="HTTP_HOST")
    http_port: int = Field(8765, alias="HTTP_PORT")
    http_path: str = Field("/mcp/", alias="HTTP_PATH")
    http_bearer_token: str = Field("", alias="HTTP_BEARER_TOKEN")
    # open: tokens optional, a wrong one is rejected. required: the reference's rule.
    agent_auth: Literal["open", "required"] = Field("open", alias="AGENT_AUTH")
    environment: str = Field("development", alias="APP_ENVIRONMENT")
    max_subject_chars: int = Field(200, alias="MAX_SUBJECT_CHARS")
    max_body_bytes: int = Field(1_048_576, alias="MAX_BODY_BYTES")
    max_recipients: int = Field(100, alias="MAX_RECIPIENTS")
    session_binding_ttl_seconds: int = Field(86400, alias="SESSION_BINDING_TTL_SECONDS")
    # File reservations: TTL bounds, when a holder counts as stale (force release), and how long
    # an ended reservation stays listable in Redis (the index keeps it for good).
    file_reservation_min_ttl_seconds: int = Field(60, alias="FILE_RESERVATION_MIN_TTL_SECONDS", ge=1)
    file_reservation_max_ttl_seconds: int = Field(30 * 86400, alias="FILE_RESERVATION_MAX_TTL_SECONDS", ge=1)
    file_reservation_inactivity_seconds: int = Field(1800, alias="FILE_RESERVATION_INACTIVITY_SECONDS", ge=0)
    file_reservation_activity_grace_seconds: int = Field(900, alias="FILE_RESERVATION_ACTIVITY_GRACE_SECONDS", ge=0)
    file_reservation_retention_seconds: int = Field(7 * 86400, alias="FILE_RESERVATION_RETENTION_SECONDS", ge=60)
    # Contacts: a blocked send asks for contact and holds the message (when the caller does not
    # say), and the shortest lifetime of a contact request or approval.
    messaging_auto_handshake_on_block: bool = Field(True, alias="MESSAGING_AUTO_HANDSHAKE_ON_BLOCK")
    contact_min_ttl_seconds: int = Field(60, alias="CONTACT_MIN_TTL_SECONDS", ge=1)
    # How long a held message (and the contact request a blocked send makes) waits for approval.
    contact_hold_ttl_seconds: int = Field(7 * 86400, alias="CONTACT_HOLD_TTL_SECONDS", ge=1)
    # Most messages one sender may have held for one recipient at a time (bounds the work of the
    # respond_contact script that delivers them).
    contact_max_held: int = Field(100, alias="CONTACT_MAX_HELD", ge=1)
    # Durability: the Git archive and the persistence worker (README "Durability").
    archive_root: Path | None = Field(None, alias="ARCHIVE_ROOT")
    persist_batch_size: int = Field(2000, alias="PERSIST_BATCH_SIZE", ge=1, le=20000)
    # The reconciler re-queues projects whose pending entries are older than this.
    persist_reconcile_age_seconds: float = Field(10.0, alias="PERSIST_RECONCILE_AGE_SECONDS", gt=0)
    persist_reconcile_interval_seconds: float = Field(5.0, alias="PERSIST_RECONCILE_INTERVAL_SECONDS", gt=0)
    # Tool profiles (the reference's TOOLS_FILTER_*; broker/mcp/profiles.py checks the names).
    tools_filter_enabled: bool = Field(False, alias="TOOLS_FILTER_ENABLED")
    tools_filter_profile: str = Field("full", alias="TOOLS_FILTER_PROFILE")
    tools_filter_mode: str = Field("include", alias="TOOLS_FILTER_MODE")
    tools_filter_clusters: str = Field("", alias="TOOLS_FILTER_CLUSTERS")
    tools_filter_tools: str = Field("", alias="TOOLS_FILTER_TOOLS")
    # Default age after which resource://views/acks-stale lists an unacknowledged message.
    ack_ttl_seconds: int = Field(1800, alias="ACK_TTL_SECONDS", ge=0)

    # Lifecycle (README "Agent and project lifecycle"): purge_old_messages' default age, and the
    # window identity this process registers under when register_agent gets no name.
    retention_max_age_days: int = Field(180, alias="RETENTION_MAX_AGE_DAYS", ge=1, le=36_500)
    window_id: str = Field("", alias="MCP_AGENT_MAIL_WINDOW_ID")
    window_ttl_days: int = Field(30, alias="MCP_AGENT_MAIL_WINDOW_TTL_DAYS", ge=1)

    # Persistence worker and health (docs/operations.md): whether `serve` persists in-process or a
    # separate `broker worker` does, how often workers prove they live, how many projects a health
    # check examines, and when /health/readiness fails (0 / false: never for that reason).
    persistence_worker: Literal["inprocess", "external"] = Field("inprocess", alias="PERSISTENCE_WORKER")
    persist_worker_heartbeat_seconds: float = Field(2.0, alias="PERSIST_WORKER_HEARTBEAT_SECONDS", gt=0, le=60)
    health_max_projects: int = Field(1000, alias="HEALTH_MAX_PROJECTS", ge=1, le=100_000)
    readiness_max_persist_lag_seconds: float = Field(0.0, alias="READINESS_MAX_PERSIST_LAG_SECONDS", ge=0)
    readiness_require_persist_worker: bool = Field(False, alias="READINESS_REQUIRE_PERSIST_WORKER")

    # Observability (docs/metrics.md): Prometheus /metrics and the per-call log.
    metrics_enabled: bool = Field(True, alias="METRICS_ENABLED")
    metrics_path: str = Field("/metrics", alias="METRICS_PATH")
    # bearer: /metrics needs HTTP_BEARER_TOKEN like every other route; none: open to scrapers.
    metrics_auth: Literal["bearer", "none"] = Field("bearer", alias="METRICS_AUTH")
    # Projects with their own pending-backlog series; the rest are summed as project="_other".
    metrics_max_projects: int = Field(50, alias="METRICS_MAX_PROJECTS", ge=0, le=1000)
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")
    # errors: one line per failed call; all: every call; off: none.
    log_calls: Literal["errors", "all", "off"] = Field("errors", alias="LOG_CALLS")

    # Idempotent sends (broker/mail/idempotency.py): how long a send's idempotency_key is remembered.
    idempotency_window_seconds: int = Field(86400, alias="IDEMPOTENCY_WINDOW_SECONDS", ge=1, le=30 * 86400)

    # Rate limits (docs/limits.md): per agent, a token bucket in Redis run by the scripts that
    # act for it (send, reserve); per client (remote address of an HTTP call), in this process.
    # Tokens per second and bucket size; 0 disables either.
    agent_rate_limit_per_second: float = Field(100.0, alias="AGENT_RATE_LIMIT_PER_SECOND", ge=0)
    agent_rate_limit_burst: int = Field(2000, alias="AGENT_RATE_LIMIT_BURST", ge=0)
    client_rate_limit_per_second: float = Field(500.0, alias="CLIENT_RATE_LIMIT_PER_SECOND", ge=0)
    client_rate_limit_burst: int = Field(5000, alias="CLIENT_RATE_LIMIT_BURST", ge=0)

    # Access (docs/security.md): the operator token the destructive project-wide tools need under
    # AGENT_AUTH=required; empty = a generated one in <STORAGE_ROOT>/admin-token.
    broker_admin_token: str = Field("", alias="BROKER_ADMIN_TOKEN", max_length=256)

    # Persistence failures (docs/durability.md): tries before a pending entry that keeps failing
    # is dead-lettered, the back-off between its tries (doubling up to the max), and the longest
    # wait of a worker between reconnects while Redis is unreachable.
    persist_max_attempts: int = Field(5, alias="PERSIST_MAX_ATTEMPTS", ge=1, le=1000)
    persist_retry_base_seconds: float = Field(2.0, alias="PERSIST_RETRY_BASE_SECONDS", ge=0)
    persist_retry_max_seconds: float = Field(300.0, alias="PERSIST_RETRY_MAX_SECONDS", ge=0)
    worker_reconnect_max_seconds: float = Field(10.0, alias="WORKER_RECONNECT_MAX_SECONDS", gt=0)

    @field_validator("storage_root", mode="after")
    @classmethod
    def _expand_root(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("redis_key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "{}: \t\n"):
            raise ValueError("REDIS_KEY_PREFIX must be non-empty without braces, colons or spaces")
        return value

    @field_validator("broker_admin_token")
    @classmethod
    def _check_admin_token(cls, value: str) -> str:
        value = value.strip()
        if value and len(value) < 32:
            raise ValueError("BROKER_ADMIN_TOKEN must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("http_path")
    @classmethod
    def _normalise_path(cls, value: str) -> str:
        value = "/" + value.strip("/")
        return value if value == "/" else value + "/"

    @property
    def index_path(self) -> Path:
        """SQLite index location: DATABASE_PATH, else <STORAGE_ROOT>/index.sqlite3."""
        return (self.database_path or self.storage_root / "index.sqlite3").expanduser()

    @property
    def archive_path(self) -> Path:
        """Git archive location: ARCHIVE_ROOT, else <STORAGE_ROOT>/archive."""
        return (self.archive_root or self.storage_root / "archive").expanduser()

    def effective_agent_auth(self, http_host: str | None = None) -> str:
        """`required` is forced when HTTP listens beyond loopback (DESIGN decision 7)."""
        if http_host is not None and not is_loopback(http_host):
            return "required"
        return self.agent_auth


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
