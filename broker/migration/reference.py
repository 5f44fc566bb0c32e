"""The reference's storage formats, as documented in ``agent-mail-api.md`` §6: its SQLite schema
(as SQLModel's ``create_all`` makes it) and the conversions between its values and ours.

The reference stores naive UTC datetimes (``2025-01-01 00:03:21.123456``, SQLAlchemy's SQLite
text form), booleans as 0/1 and registration tokens in clear. This broker stores ISO-8601 text
with ``+00:00`` and only ``sha256:<hex>`` digests of tokens (broker/persistence/index.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker.identity.auth import token_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
  id INTEGER NOT NULL PRIMARY KEY,
  slug VARCHAR(255) NOT NULL,
  human_key VARCHAR(255) NOT NULL,
  created_at DATETIME NOT NULL,
  archived_at DATETIME
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_projects_slug ON projects (slug);
CREATE INDEX IF NOT EXISTS ix_projects_human_key ON projects (human_key);
CREATE TABLE IF NOT EXISTS agents (
  id INTEGER NOT NULL PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects (id),
  name VARCHAR(128) NOT NULL,
  program VARCHAR(128) NOT NULL,
  model VARCHAR(128) NOT NULL,
  task_description VARCHAR(2048) NOT NULL DEFAULT '',
  inception_ts DATETIME NOT NULL,
  last_active_ts DATETIME NOT NULL,
  attachments_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  contact_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  registration_token VARCHAR(64),
  retired_at DATETIME,
  CONSTRAINT uq_agent_project_name UNIQUE (project_id, name)
);
CREATE INDEX IF NOT EXISTS ix_agents_project_id ON agents (project_id);
CREATE INDEX IF NOT EXISTS ix_agents_registration_token ON agents (registration_token);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER NOT NULL PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects (id),
  sender_id INTEGER NOT NULL REFERENCES agents (id),
  thread_id VARCHAR(128),
  topic VARCHAR(64),
  subject VARCHAR(512) NOT NULL,
  body_md TEXT NOT NULL,
  importance VARCHAR(16) NOT NULL DEFAULT 'normal',
  ack_required BOOLEAN NOT NULL DEFAULT 0,
  created_ts DATETIME NOT NULL,
  attachments JSON NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS ix_messages_project_id ON messages (project_id);
CREATE INDEX IF NOT EXISTS ix_messages_sender_id ON messages (sender_id);
CREATE INDEX IF NOT EXISTS ix_messages_thread_id ON messages (thread_id);
CREATE INDEX IF NOT EXISTS idx_messages_project_created ON messages (project_id, created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_project_topic ON messages (project_id, topic);
CREATE TABLE IF NOT EXISTS message_recipients (
  message_id INTEGER NOT NULL REFERENCES messages (id),
  agent_id INTEGER NOT NULL REFERENCES agents (id),
  kind VARCHAR(8) NOT NULL DEFAULT 'to',
  read_ts DATETIME,
  ack_ts DATETIME,
  PRIMARY KEY (message_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent ON message_recipients (agent_id);
CREATE TABLE IF NOT EXISTS file_reservations (
  id INTEGER NOT NULL PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects (id),
  agent_id INTEGER NOT NULL REFERENCES agents (id),
  path_pattern VARCHAR(512) NOT NULL,
  exclusive BOOLEAN NOT NULL DEFAULT 1,
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts DATETIME NOT NULL,
  expires_ts DATETIME NOT NULL,
  released_ts DATETIME
);
CREATE INDEX IF NOT EXISTS ix_file_reservations_project_id ON file_reservations (project_id);
CREATE INDEX IF NOT EXISTS ix_file_reservations_agent_id ON file_reservations (agent_id);
CREATE TABLE IF NOT EXISTS agent_links (
  id INTEGER NOT NULL PRIMARY KEY,
  a_project_id INTEGER NOT NULL REFERENCES projects (id),
  a_agent_id INTEGER NOT NULL REFERENCES agents (id),
  b_project_id INTEGER NOT NULL REFERENCES projects (id),
  b_agent_id INTEGER NOT NULL REFERENCES agents (id),
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts DATETIME NOT NULL,
  updated_ts DATETIME NOT NULL,
  expires_ts DATETIME,
  CONSTRAINT uq_agentlink_pair UNIQUE (a_project_id, a_agent_id, b_project_id, b_agent_id)
);
CREATE TABLE IF NOT EXISTS window_identities (
  id INTEGER NOT NULL PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects (id),
  window_uuid VARCHAR(64) NOT NULL,
  display_name VARCHAR(128) NOT NULL,
  created_ts DATETIME NOT NULL,
  last_active_ts DATETIME NOT NULL,
  expires_ts DATETIME,
  UNIQUE (project_id, window_uuid)
);
CREATE TABLE IF NOT EXISTS message_summaries (
  id INTEGER NOT NULL PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects (id),
  summary_text TEXT NOT NULL,
  start_ts DATETIME NOT NULL,
  end_ts DATETIME NOT NULL,
  source_message_count INTEGER NOT NULL,
  source_thread_ids TEXT NOT NULL,
  llm_model VARCHAR(128),
  cost_usd FLOAT,
  created_ts DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
  id INTEGER NOT NULL PRIMARY KEY,
  product_uid VARCHAR(64) NOT NULL UNIQUE,
  name VARCHAR(255) NOT NULL UNIQUE,
  created_at DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS product_project_links (
  id INTEGER NOT NULL PRIMARY KEY,
  product_id INTEGER NOT NULL REFERENCES products (id),
  project_id INTEGER NOT NULL REFERENCES projects (id),
  created_at DATETIME NOT NULL,
  UNIQUE (product_id, project_id)
);
CREATE VIRTUAL TABLE IF NOT EXISTS fts_messages USING fts5(subject, body_md);
CREATE TRIGGER IF NOT EXISTS fts_messages_ai AFTER INSERT ON messages BEGIN
  INSERT INTO fts_messages(rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_ad AFTER DELETE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_au AFTER UPDATE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
  INSERT INTO fts_messages(rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;
"""

# Tables whose rows a mailbox carries, in the order their foreign keys allow.
TABLES = (
    "projects",
    "agents",
    "messages",
    "message_recipients",
    "file_reservations",
    "agent_links",
    "window_identities",
    "message_summaries",
    "products",
    "product_project_links",
)


def from_reference_time(value: str | None) -> str | None:
    """A reference timestamp (naive UTC text, ``T`` or space separated, ``Z`` or offset tolerated)
    as this broker stores it: ISO-8601 with ``+00:00``, microseconds only when not zero.
    Raises ValueError on text that is not a timestamp."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.isoformat()


def to_reference_time(value: str | None) -> str | None:
    """This broker's ISO-8601 timestamp as the reference stores it: naive UTC,
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's SQLite DATETIME text)."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%d %H:%M:%S.%f")


def token_digest(token: str) -> str:
    """How the index keeps a registration token: its digest, so a token a reference agent holds
    keeps working after the import."""
    return "sha256:" + token_hash(token)
