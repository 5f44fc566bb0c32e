"""The SQLite index's schema as migration 1 creates it: the reference's tables and column names,
plus FTS5 over subject and body kept by triggers. ``IF NOT EXISTS`` everywhere, so migration 1 also
adopts a file made before migrations were versioned (its tables are left as they are)."""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
  id INTEGER PRIMARY KEY,
  slug VARCHAR(255) NOT NULL UNIQUE,
  human_key VARCHAR(255) NOT NULL,
  created_at TEXT NOT NULL,
  archived_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_projects_human_key ON projects(human_key);

CREATE TABLE IF NOT EXISTS agents (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  name VARCHAR(128) NOT NULL,
  program VARCHAR(128) NOT NULL,
  model VARCHAR(128) NOT NULL,
  task_description VARCHAR(2048) NOT NULL DEFAULT '',
  inception_ts TEXT NOT NULL,
  last_active_ts TEXT NOT NULL,
  attachments_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  contact_policy VARCHAR(16) NOT NULL DEFAULT 'auto',
  registration_token VARCHAR(80),
  retired_at TEXT,
  UNIQUE (project_id, name)
);
CREATE INDEX IF NOT EXISTS ix_agents_project_id ON agents(project_id);
CREATE INDEX IF NOT EXISTS ix_agents_registration_token ON agents(registration_token);

CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  sender_id INTEGER NOT NULL REFERENCES agents(id),
  thread_id VARCHAR(128),
  topic VARCHAR(64),
  subject VARCHAR(512) NOT NULL,
  body_md TEXT NOT NULL,
  importance VARCHAR(16) NOT NULL DEFAULT 'normal',
  ack_required BOOLEAN NOT NULL DEFAULT 0,
  created_ts TEXT NOT NULL,
  attachments JSON NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS ix_messages_project_id ON messages(project_id);
CREATE INDEX IF NOT EXISTS ix_messages_sender_id ON messages(sender_id);
CREATE INDEX IF NOT EXISTS idx_messages_thread_id ON messages(thread_id);
CREATE INDEX IF NOT EXISTS idx_messages_created_ts ON messages(created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_importance ON messages(importance);
CREATE INDEX IF NOT EXISTS idx_messages_project_created ON messages(project_id, created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_project_sender_created ON messages(project_id, sender_id, created_ts);
CREATE INDEX IF NOT EXISTS idx_messages_project_topic ON messages(project_id, topic);

CREATE TABLE IF NOT EXISTS message_recipients (
  message_id INTEGER NOT NULL REFERENCES messages(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  kind VARCHAR(8) NOT NULL DEFAULT 'to',
  read_ts TEXT,
  ack_ts TEXT,
  PRIMARY KEY (message_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent ON message_recipients(agent_id);
CREATE INDEX IF NOT EXISTS idx_message_recipients_agent_message ON message_recipients(agent_id, message_id);

CREATE TABLE IF NOT EXISTS file_reservations (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  path_pattern VARCHAR(512) NOT NULL,
  exclusive BOOLEAN NOT NULL DEFAULT 1,
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts TEXT NOT NULL,
  expires_ts TEXT NOT NULL,
  released_ts TEXT
);
CREATE INDEX IF NOT EXISTS ix_file_reservations_project_id ON file_reservations(project_id);
CREATE INDEX IF NOT EXISTS ix_file_reservations_agent_id ON file_reservations(agent_id);
CREATE INDEX IF NOT EXISTS idx_file_reservations_project_released_expires
  ON file_reservations(project_id, released_ts, expires_ts);
CREATE INDEX IF NOT EXISTS idx_file_reservations_project_agent_released
  ON file_reservations(project_id, agent_id, released_ts);
CREATE INDEX IF NOT EXISTS idx_file_reservations_expires_ts ON file_reservations(expires_ts);

CREATE TABLE IF NOT EXISTS agent_links (
  id INTEGER PRIMARY KEY,
  a_project_id INTEGER NOT NULL REFERENCES projects(id),
  a_agent_id INTEGER NOT NULL REFERENCES agents(id),
  b_project_id INTEGER NOT NULL REFERENCES projects(id),
  b_agent_id INTEGER NOT NULL REFERENCES agents(id),
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  reason VARCHAR(512) NOT NULL DEFAULT '',
  created_ts TEXT NOT NULL,
  updated_ts TEXT NOT NULL,
  expires_ts TEXT,
  UNIQUE (a_project_id, a_agent_id, b_project_id, b_agent_id)
);
CREATE INDEX IF NOT EXISTS idx_agent_links_a_project ON agent_links(a_project_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_b_project ON agent_links(b_project_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_b_project_agent ON agent_links(b_project_id, b_agent_id);
CREATE INDEX IF NOT EXISTS idx_agent_links_status ON agent_links(status);

CREATE TABLE IF NOT EXISTS message_summaries (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  summary_text TEXT NOT NULL,
  start_ts TEXT NOT NULL,
  end_ts TEXT NOT NULL,
  source_message_count INTEGER NOT NULL DEFAULT 0,
  source_thread_ids TEXT NOT NULL DEFAULT '[]',
  llm_model VARCHAR(128),
  cost_usd REAL,
  created_ts TEXT NOT NULL,
  agent_id INTEGER
);
CREATE INDEX IF NOT EXISTS idx_summaries_project_end ON message_summaries(project_id, end_ts);

CREATE VIRTUAL TABLE IF NOT EXISTS fts_messages USING fts5(message_id UNINDEXED, subject, body);
CREATE TRIGGER IF NOT EXISTS fts_messages_ai AFTER INSERT ON messages BEGIN
  INSERT INTO fts_messages(rowid, message_id, subject, body) VALUES (new.id, new.id, new.subject, new.body_md);
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_ad AFTER DELETE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
END;
CREATE TRIGGER IF NOT EXISTS fts_messages_au AFTER UPDATE ON messages BEGIN
  DELETE FROM fts_messages WHERE rowid = old.id;
  INSERT INTO fts_messages(rowid, message_id, subject, body) VALUES (new.id, new.id, new.subject, new.body_md);
END;
"""


def baseline(conn: Any) -> None:
    """Migration 1 on SQLite: every table, index and trigger that is missing."""
    for statement in statements(SCHEMA):
        conn.execute(statement)
    # message_summaries.agent_id (not in the reference): the agent a summary was made for, NULL
    # for a project-wide one (AGENT_AUTH=open without an agent). Files made before it lack it.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(message_summaries)")}
    if "agent_id" not in columns:
        conn.execute("ALTER TABLE message_summaries ADD COLUMN agent_id INTEGER")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_summaries_project_agent_end ON message_summaries(project_id, agent_id, end_ts)"
    )


def statements(script: str) -> list[str]:
    """Split a script into statements (triggers contain ';' inside BEGIN ... END)."""
    found, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    return [s for s in found if s]
