"""Settings, read from the environment when a server is built (never at import).

Every field carries its env name (alias) and a description: `python -m broker.config` renders them
as the table of docs/configuration.md (broker/config/page.py), and tests/test_configuration_docs.py
keeps that page equal to the output, so a setting without a description or a stale page fails CI.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.config.hosts import is_loopback
from broker.config.output_format import output_format_name


class Settings(BaseSettings):
    """Every knob of the broker; env names follow the reference where the meaning matches."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Redis and storage.
    redis_url: str = Field(
        "",
        alias="REDIS_URL",
        description="`redis://`, `rediss://` (TLS), `unix://` (socket) or `memory://<name>` (in-process fakeredis, "
        "shared by servers in one process). Empty: the embedded default (a managed `redis-server` under "
        "`<STORAGE_ROOT>/redis` when the binary exists, else in-process fakeredis).",
    )
    redis_cluster: bool = Field(
        False,
        alias="REDIS_CLUSTER",
        description="`true`: `REDIS_URL` is a seed node of a Redis Cluster (`redis://` or `rediss://`; every "
        "project lives in one slot). Needs `QUEUE_REDIS_URL`, since the persistence queue (rq) cannot live on "
        "a cluster.",
    )
    queue_redis_url: str = Field(
        "",
        alias="QUEUE_REDIS_URL",
        description="A standalone Redis for the persistence queue's jobs (hints only: the pending sets in "
        "`REDIS_URL` are the record, and the reconciler re-queues lost jobs). Empty: `REDIS_URL` itself; "
        "required with `REDIS_CLUSTER=true`.",
    )
    redis_key_prefix: str = Field(
        "am",
        alias="REDIS_KEY_PREFIX",
        description="First segment of every key, to keep tenants or test runs apart in one Redis. "
        "No braces, colons or spaces.",
    )
    redis_max_connections: int = Field(
        32,
        alias="REDIS_MAX_CONNECTIONS",
        ge=1,
        description="Connections per broker process; concurrent calls wait for a free one.",
    )
    storage_root: Path = Field(
        Path("~/.agent-broker"),
        alias="STORAGE_ROOT",
        description="Local data directory: the embedded Redis (`redis/`), the archive, the index and the "
        "operator token file live under it.",
    )
    database_url: str = Field(
        "",
        alias="DATABASE_URL",
        description="The index: `postgresql://user:password@host:5432/db` (shared by brokers on several "
        "hosts) or `sqlite:///path`. Unset: the SQLite file of `DATABASE_PATH` (docs/operations.md).",
    )
    database_path: Path | None = Field(
        None,
        alias="DATABASE_PATH",
        description="The SQLite index when `DATABASE_URL` is unset. Unset: `<STORAGE_ROOT>/index.sqlite3`.",
    )
    archive_root: Path | None = Field(
        None,
        alias="ARCHIVE_ROOT",
        description="The bare Git repository of the archive. Unset: `<STORAGE_ROOT>/archive`.",
    )

    # HTTP and access.
    http_host: str = Field("127.0.0.1", alias="HTTP_HOST", description="HTTP bind address (`--host` overrides).")
    http_port: int = Field(8765, alias="HTTP_PORT", description="HTTP port (`--port` overrides).")
    http_path: str = Field(
        "/mcp/",
        alias="HTTP_PATH",
        description="Path of the MCP endpoint; normalised to a leading and trailing `/`.",
    )
    http_bearer_token: str = Field(
        "",
        alias="HTTP_BEARER_TOKEN",
        description="When set, every HTTP request except `/health/*` and `OPTIONS` needs "
        "`Authorization: Bearer <token>`.",
    )
    agent_auth: Literal["open", "required"] = Field(
        "open",
        alias="AGENT_AUTH",
        description="`open`: agent tokens are optional, a wrong one is refused. `required`: agent-scoped calls "
        "need the agent's token (or a session that proved it). Forced to `required` when HTTP binds beyond "
        "loopback.",
    )
    broker_admin_token: str = Field(
        "",
        alias="BROKER_ADMIN_TOKEN",
        max_length=256,
        description="The operator token that destructive project-wide operations need under "
        "`AGENT_AUTH=required` (at least 32 characters). Empty: a generated one in `<STORAGE_ROOT>/admin-token`.",
    )
    session_binding_ttl_seconds: int = Field(
        86400,
        alias="SESSION_BINDING_TTL_SECONDS",
        description="How long an MCP session stays authenticated as an agent after a successful token check.",
    )
    environment: str = Field(
        "development", alias="APP_ENVIRONMENT", description="Reported as `environment` by `health_check`."
    )

    # Message bounds.
    max_subject_chars: int = Field(200, alias="MAX_SUBJECT_CHARS", description="Longest subject a send accepts.")
    max_body_bytes: int = Field(1_048_576, alias="MAX_BODY_BYTES", description="Largest `body_md`, in UTF-8 bytes.")
    max_recipients: int = Field(
        100, alias="MAX_RECIPIENTS", description="Most names in `to` + `cc` + `bcc` of one send."
    )

    # Attachments (docs/attachments.md).
    inline_image_max_bytes: int = Field(
        65_536,
        alias="INLINE_IMAGE_MAX_BYTES",
        ge=0,
        description="Most bytes of converted images one message carries inline as `data:` URIs (they are "
        "stored in Redis with the message); other images are stored as files in the archive.",
    )
    convert_images: bool = Field(
        True,
        alias="CONVERT_IMAGES",
        description="Default of `send_message`'s `convert_images`: turn local images referenced in `body_md` "
        "into WebP attachments.",
    )
    keep_original_images: bool = Field(
        False,
        alias="KEEP_ORIGINAL_IMAGES",
        description="Also archive each image's original bytes under `attachments/originals/`.",
    )
    allow_absolute_attachment_paths: bool = Field(
        False,
        alias="ALLOW_ABSOLUTE_ATTACHMENT_PATHS",
        description="Accept absolute attachment paths (any file the broker can read); relative paths must "
        "stay inside the project's directory either way.",
    )
    max_attachment_bytes: int = Field(
        10_485_760,
        alias="MAX_ATTACHMENT_BYTES",
        ge=1,
        description="Largest file one attachment may read, in bytes.",
    )

    # File reservations.
    file_reservation_min_ttl_seconds: int = Field(
        60,
        alias="FILE_RESERVATION_MIN_TTL_SECONDS",
        ge=1,
        description="Shortest `ttl_seconds` / `extend_seconds` accepted.",
    )
    file_reservation_max_ttl_seconds: int = Field(
        30 * 86400,
        alias="FILE_RESERVATION_MAX_TTL_SECONDS",
        ge=1,
        description="Longest `ttl_seconds` / `extend_seconds` accepted.",
    )
    file_reservation_inactivity_seconds: int = Field(
        1800,
        alias="FILE_RESERVATION_INACTIVITY_SECONDS",
        ge=0,
        description="A holder inactive this long (no registration or send) may be force-released as stale.",
    )
    file_reservation_activity_grace_seconds: int = Field(
        900,
        alias="FILE_RESERVATION_ACTIVITY_GRACE_SECONDS",
        ge=0,
        description="Mail, file or git activity this recent keeps a holder from being stale.",
    )
    file_reservation_retention_seconds: int = Field(
        7 * 86400,
        alias="FILE_RESERVATION_RETENTION_SECONDS",
        ge=60,
        description="How long an ended reservation stays listable in Redis (dropped after that once persisted; "
        "the index keeps it).",
    )

    # Build slots and the product bus: the reference's gated tools (docs/build-slots-and-products.md).
    worktrees_enabled: bool = Field(
        False,
        alias="WORKTREES_ENABLED",
        description="Register the build-slot and product-bus tools (as `GIT_IDENTITY_ENABLED` does).",
    )
    git_identity_enabled: bool = Field(
        False,
        alias="GIT_IDENTITY_ENABLED",
        description="Register the build-slot and product-bus tools (as `WORKTREES_ENABLED` does).",
    )
    build_slot_max_ttl_seconds: int = Field(
        7 * 86400,
        alias="BUILD_SLOT_MAX_TTL_SECONDS",
        ge=60,
        description="Longest `ttl_seconds` / `extend_seconds` of a build slot lease.",
    )

    # Contacts.
    messaging_auto_handshake_on_block: bool = Field(
        True,
        alias="MESSAGING_AUTO_HANDSHAKE_ON_BLOCK",
        description="A send blocked only for lack of contact holds the message and requests contact "
        "(when the call does not give `auto_contact_if_blocked`).",
    )
    contact_min_ttl_seconds: int = Field(
        60,
        alias="CONTACT_MIN_TTL_SECONDS",
        ge=1,
        description="Shortest lifetime of a contact request or approval; shorter `ttl_seconds` are raised to it.",
    )
    contact_hold_ttl_seconds: int = Field(
        7 * 86400,
        alias="CONTACT_HOLD_TTL_SECONDS",
        ge=1,
        description="How long a held message (and the contact request a blocked send makes) waits for approval.",
    )
    contact_max_held: int = Field(
        100,
        alias="CONTACT_MAX_HELD",
        ge=1,
        description="Most messages one sender may have held for one recipient; past it a send fails with "
        "`CONTACT_REQUIRED`.",
    )

    # Persistence (docs/durability.md, docs/operations.md).
    persist_batch_size: int = Field(
        2000,
        alias="PERSIST_BATCH_SIZE",
        ge=1,
        le=20000,
        description="Most pending entries one batch (one Git commit, one SQLite transaction) takes.",
    )
    persist_reconcile_age_seconds: float = Field(
        10.0,
        alias="PERSIST_RECONCILE_AGE_SECONDS",
        gt=0,
        description="The reconciler re-enqueues projects whose oldest pending entry is older than this.",
    )
    persist_reconcile_interval_seconds: float = Field(
        5.0,
        alias="PERSIST_RECONCILE_INTERVAL_SECONDS",
        gt=0,
        description="How often each worker's reconciler looks.",
    )
    persistence_worker: Literal["inprocess", "external"] = Field(
        "inprocess",
        alias="PERSISTENCE_WORKER",
        description="`inprocess`: `broker serve` persists on a thread of its own process (with or without "
        "`REDIS_URL`). `external`: it runs none; `broker worker` processes do.",
    )
    persist_worker_heartbeat_seconds: float = Field(
        2.0,
        alias="PERSIST_WORKER_HEARTBEAT_SECONDS",
        gt=0,
        le=60,
        description="How often workers beat; health counts a worker gone after three missed beats.",
    )
    persist_max_attempts: int = Field(
        5,
        alias="PERSIST_MAX_ATTEMPTS",
        ge=1,
        le=1000,
        description="Tries before a pending entry that keeps failing is dead-lettered.",
    )
    persist_retry_base_seconds: float = Field(
        2.0,
        alias="PERSIST_RETRY_BASE_SECONDS",
        ge=0,
        description="Wait after an entry's first failed try; doubles with each try.",
    )
    persist_retry_max_seconds: float = Field(
        300.0,
        alias="PERSIST_RETRY_MAX_SECONDS",
        ge=0,
        description="Longest wait between two tries of an entry.",
    )
    worker_reconnect_max_seconds: float = Field(
        10.0,
        alias="WORKER_RECONNECT_MAX_SECONDS",
        gt=0,
        description="Longest wait between two restarts of a worker while Redis is unreachable.",
    )

    # Health and readiness (docs/operations.md); 0 / false: never unready for that reason.
    health_max_projects: int = Field(
        1000,
        alias="HEALTH_MAX_PROJECTS",
        ge=1,
        le=100_000,
        description="Most projects one health check or readiness probe reads.",
    )
    readiness_max_persist_lag_seconds: float = Field(
        0.0,
        alias="READINESS_MAX_PERSIST_LAG_SECONDS",
        ge=0,
        description="Readiness fails when the oldest pending change is older than this (0: never).",
    )
    readiness_require_persist_worker: bool = Field(
        False,
        alias="READINESS_REQUIRE_PERSIST_WORKER",
        description="Readiness fails while no persistence worker is alive.",
    )

    # Tool profiles (the reference's TOOLS_FILTER_*; docs/resources-and-profiles.md).
    tools_filter_enabled: bool = Field(False, alias="TOOLS_FILTER_ENABLED", description="Turn tool profiles on.")
    tools_filter_profile: str = Field(
        "full",
        alias="TOOLS_FILTER_PROFILE",
        description="`full`, `core`, `minimal`, `messaging` or `custom`.",
    )
    tools_filter_mode: str = Field(
        "include",
        alias="TOOLS_FILTER_MODE",
        description="`custom` only: keep (`include`) or drop (`exclude`) the named clusters and tools.",
    )
    tools_filter_clusters: str = Field(
        "", alias="TOOLS_FILTER_CLUSTERS", description="`custom` only: comma-separated cluster names."
    )
    tools_filter_tools: str = Field(
        "", alias="TOOLS_FILTER_TOOLS", description="`custom` only: comma-separated tool names."
    )
    ack_ttl_seconds: int = Field(
        1800,
        alias="ACK_TTL_SECONDS",
        ge=0,
        description="Default `ttl_seconds` of `resource://views/acks-stale`.",
    )

    # Output format (the reference's names; docs/tools.md, "Output format").
    output_format: str = Field(
        "",
        alias="MCP_AGENT_MAIL_OUTPUT_FORMAT",
        description="Format of results when a call passes no `format` (or `auto`): `json`, `toon` or one of "
        "their MIME-type aliases. Empty: `TOON_DEFAULT_FORMAT`.",
    )
    toon_default_format: str = Field(
        "",
        alias="TOON_DEFAULT_FORMAT",
        description="The default format when `MCP_AGENT_MAIL_OUTPUT_FORMAT` is empty. Empty: `json`.",
    )
    toon_stats: bool = Field(
        False,
        alias="TOON_STATS",
        description="TOON results carry `meta.toon_stats`: estimated tokens of the JSON and the TOON text.",
    )

    # The hot window (docs/operations.md#sizing): what Redis keeps; the index serves the rest.
    hot_retention_seconds: int = Field(
        7 * 86_400,
        alias="HOT_RETENTION_SECONDS",
        ge=1,
        description="Messages older than this leave Redis once persisted; reads take them from the index.",
    )
    hot_inbox_max_messages: int = Field(
        10_000,
        alias="HOT_INBOX_MAX_MESSAGES",
        ge=1,
        description="Newest messages kept in Redis per inbox and per outbox; older ones leave once persisted.",
    )
    hot_trim_interval_seconds: float = Field(
        30.0,
        alias="HOT_TRIM_INTERVAL_SECONDS",
        gt=0,
        description="How often each persistence worker moves messages past the hot window out of Redis.",
    )

    # Lifecycle (docs/lifecycle.md).
    retention_max_age_days: int = Field(
        180,
        alias="RETENTION_MAX_AGE_DAYS",
        ge=1,
        le=36_500,
        description="Default `max_age_days` of `purge_old_messages`.",
    )
    agent_name_enforcement_mode: Literal["coerce", "strict", "always_auto"] = Field(
        "coerce",
        alias="AGENT_NAME_ENFORCEMENT_MODE",
        description="What `register_agent` does with a `name` that is neither adjective+noun nor an explicit id "
        "(`alpha-one`): `coerce` registers a generated name instead, `strict` refuses it with a coded error, "
        "`always_auto` ignores every `name` and generates one.",
    )
    window_id: str = Field(
        "",
        alias="MCP_AGENT_MAIL_WINDOW_ID",
        description="Window identity of this process: `register_agent` without a name then reuses the window's "
        "agent name.",
    )
    window_ttl_days: int = Field(
        30,
        alias="MCP_AGENT_MAIL_WINDOW_TTL_DAYS",
        ge=1,
        description="A window identity expires this long after its last registration.",
    )

    # Observability (docs/metrics.md).
    metrics_enabled: bool = Field(
        True, alias="METRICS_ENABLED", description="`false` removes `/metrics` and the per-call counting."
    )
    metrics_path: str = Field("/metrics", alias="METRICS_PATH", description="Where the metrics are served.")
    metrics_auth: Literal["bearer", "none"] = Field(
        "bearer",
        alias="METRICS_AUTH",
        description="`bearer`: a scrape needs `HTTP_BEARER_TOKEN` like every other route (when set). "
        "`none`: this one path is open.",
    )
    metrics_max_projects: int = Field(
        50,
        alias="METRICS_MAX_PROJECTS",
        ge=0,
        le=1000,
        description='Projects with their own backlog series; the rest are summed as `project="_other"`.',
    )
    log_format: Literal["text", "json"] = Field(
        "text", alias="LOG_FORMAT", description="Call log lines as `key=value` pairs or one JSON object each."
    )
    log_calls: Literal["errors", "all", "off"] = Field(
        "errors",
        alias="LOG_CALLS",
        description="`errors`: one line per failed call; `all`: every call; `off`: none.",
    )

    # Sends and rate limits (docs/limits.md).
    idempotency_window_seconds: int = Field(
        86400,
        alias="IDEMPOTENCY_WINDOW_SECONDS",
        ge=1,
        le=30 * 86400,
        description="How long a send's `idempotency_key` is remembered.",
    )
    agent_rate_limit_per_second: float = Field(
        100.0,
        alias="AGENT_RATE_LIMIT_PER_SECOND",
        ge=0,
        description="Tokens an agent's bucket (sends, reservations; kept in Redis) regains per second; 0: off.",
    )
    agent_rate_limit_burst: int = Field(
        2000, alias="AGENT_RATE_LIMIT_BURST", ge=0, description="Size of an agent's bucket; 0: off."
    )
    client_rate_limit_per_second: float = Field(
        500.0,
        alias="CLIENT_RATE_LIMIT_PER_SECOND",
        ge=0,
        description="Tool calls and resource reads an HTTP client (remote address) regains per second, "
        "per broker process; 0: off.",
    )
    client_rate_limit_burst: int = Field(
        5000, alias="CLIENT_RATE_LIMIT_BURST", ge=0, description="Size of an HTTP client's bucket; 0: off."
    )

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

    @field_validator("output_format", "toon_default_format")
    @classmethod
    def _check_output_format(cls, value: str) -> str:
        return output_format_name(value)

    @field_validator("http_path")
    @classmethod
    def _normalise_path(cls, value: str) -> str:
        value = "/" + value.strip("/")
        return value if value == "/" else value + "/"

    @model_validator(mode="after")
    def _check_cluster(self) -> Settings:
        if self.queue_redis_url and not self.queue_redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("QUEUE_REDIS_URL must be a standalone Redis: redis://, rediss:// or unix://")
        if not self.redis_cluster:
            return self
        if not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError(
                "REDIS_CLUSTER_SETTINGS: REDIS_CLUSTER=true needs REDIS_URL set to a seed node of the cluster "
                "(redis:// or rediss://); the embedded Redis is a single node"
            )
        if not self.queue_redis_url:
            raise ValueError(
                "REDIS_CLUSTER_SETTINGS: REDIS_CLUSTER=true needs QUEUE_REDIS_URL, a standalone Redis for the "
                "persistence queue (rq cannot run on a cluster); see docs/operations.md"
            )
        return self

    @property
    def data_redis_url(self) -> str:
        """REDIS_URL as the store opens it: marked as a cluster seed under REDIS_CLUSTER=true
        (broker/store/clients.py); empty for the embedded default."""
        if self.redis_cluster and self.redis_url:
            scheme, _, rest = self.redis_url.partition("://")
            return f"{scheme}+cluster://{rest}"
        return self.redis_url

    def queue_url(self, data_url: str) -> str:
        """The Redis of the persistence queue: QUEUE_REDIS_URL, else the data Redis ``data_url``
        (REDIS_URL as resolved, the embedded one included)."""
        return self.queue_redis_url or data_url

    @property
    def index_path(self) -> Path:
        """SQLite index location: the path of a ``sqlite:///`` DATABASE_URL, else DATABASE_PATH, else
        <STORAGE_ROOT>/index.sqlite3. With a PostgreSQL DATABASE_URL it is unused by the index
        (only the default location of files kept beside it)."""
        url = self.database_url.strip()
        if url.lower().startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return Path(url[len("sqlite:///") :]).expanduser()
        return (self.database_path or self.storage_root / "index.sqlite3").expanduser()

    @property
    def index_url(self) -> str:
        """The index's database URL as configured: DATABASE_URL, else ``sqlite:///<index_path>``.
        It may carry a password: show ``index_url_redacted``, never this. Checked (scheme, reach)
        by broker.persistence.index when the index opens."""
        url = self.database_url.strip()
        return url if url else f"sqlite:///{self.index_path}"

    @property
    def index_url_redacted(self) -> str:
        """``index_url`` without its password (``postgresql://user@host:5432/db``)."""
        url = self.index_url
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower().startswith("sqlite"):
            return url
        netloc, slash, path = rest.partition("/")
        userinfo, at, hostport = netloc.rpartition("@")
        if at:
            netloc = f"{userinfo.partition(':')[0]}@{hostport}"
        return f"{scheme}://{netloc}{slash}{path.partition('?')[0]}"

    @property
    def archive_path(self) -> Path:
        """Git archive location: ARCHIVE_ROOT, else <STORAGE_ROOT>/archive."""
        return (self.archive_root or self.storage_root / "archive").expanduser()

    @property
    def attachments_staging_path(self) -> Path:
        """Where attachment files wait for the persistence worker to commit them:
        <STORAGE_ROOT>/attachments (docs/attachments.md)."""
        return self.storage_root / "attachments"

    @property
    def gated_tools_enabled(self) -> bool:
        """Whether the build-slot and product-bus tools are registered (the reference's gate)."""
        return self.worktrees_enabled or self.git_identity_enabled

    def effective_agent_auth(self, http_host: str | None = None) -> str:
        """`required` is forced when HTTP listens beyond loopback (decision 7 in docs/architecture.md)."""
        if http_host is not None and not is_loopback(http_host):
            return "required"
        return self.agent_auth


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
